"""MobileNetV2 encoder + pix2pix decoder, as in TensorFlow's image-segmentation tutorial."""

import keras
from keras import layers

from segkit.models.blocks import SKIPS, check_bool, check_choice, check_input_shape, check_num_classes
from segkit.models.blocks import feature_extractor, upsample
from segkit.models.weights import keras_application, load_encoder_weights, parse_encoder_weights

ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the widths keras.applications has ImageNet weights for
DECODER_FILTERS = (512, 256, 128, 64)


def build_mobilenetv2_pix2pix(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    alpha=1.0,
    encoder_trainable=True,
    dropout=False,
):
    """U-Net-like model: MobileNetV2 encoder, pix2pix upsample blocks as the decoder.

    The encoder's stride 2, 4, 8, 16 and 32 features (`SKIPS["mobilenetv2"]`) feed four
    upsample blocks (512, 256, 128, 64 filters), each concatenated with the next skip, and a
    last Conv2DTranspose brings stride 2 back to full resolution.

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None / "none", "imagenet" or a weights file (see segkit/models/weights/).
        alpha: MobileNetV2 width multiplier, one of ALPHAS.
        encoder_trainable: False freezes the encoder (its BatchNorms then run in inference mode).
        dropout: Dropout(0.5) in the decoder blocks, as pix2pix's `apply_dropout`.

    Returns:
        keras.Model named "mobilenetv2_pix2pix": float32 images in [0, 1], (N, H, W, 3) ->
        float32 logits (N, H, W, num_classes).

    Example:
        >>> model = build_mobilenetv2_pix2pix(3, alpha=0.35)
        >>> model(np.zeros((1, 64, 64, 3), "float32")).shape
        TensorShape([1, 64, 64, 3])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_choice("alpha", alpha, ALPHAS)
    check_bool("encoder_trainable", encoder_trainable)
    check_bool("dropout", dropout)
    weights = parse_encoder_weights(encoder_weights)

    backbone = keras_application(
        keras.applications.MobileNetV2,
        "mobilenetv2",
        weights,
        input_shape=input_shape,
        include_top=False,
        alpha=alpha,
    )
    encoder = feature_extractor(backbone, SKIPS["mobilenetv2"])
    encoder.trainable = encoder_trainable

    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_plus1")(inputs)  # MobileNet wants [-1, 1]
    *skips, x = encoder(x)
    for i, (filters, skip) in enumerate(zip(DECODER_FILTERS, reversed(skips))):
        x = upsample(x, filters, dropout=dropout, name=f"decoder_up{i}")
        x = layers.Concatenate(name=f"decoder_concat{i}")([x, skip])
    outputs = layers.Conv2DTranspose(
        num_classes, 3, strides=2, padding="same", dtype="float32", name="logits"
    )(x)
    model = keras.Model(inputs, outputs, name="mobilenetv2_pix2pix")

    if weights not in (None, "imagenet"):
        print(load_encoder_weights(encoder, weights))
    return model
