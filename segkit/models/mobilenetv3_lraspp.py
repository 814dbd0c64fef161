"""MobileNetV3 encoder + Lite R-ASPP head (Howard et al. 2019, "Searching for MobileNetV3", 6.4)."""

import keras
from keras import layers

from segkit.models.blocks import SKIPS, check_bool, check_choice, check_input_shape, check_num_classes
from segkit.models.blocks import BilinearUpsample, feature_extractor
from segkit.models.weights import keras_application, load_encoder_weights, parse_encoder_weights

VARIANTS = {"large": keras.applications.MobileNetV3Large, "small": keras.applications.MobileNetV3Small}
HEAD_FILTERS = 128


def lraspp_head(low, high, num_classes, filters=HEAD_FILTERS, name="lraspp"):
    """Lite R-ASPP: (N, H/8, W/8, c_low), (N, H/16, W/16, c_high) -> (N, H/8, W/8, num_classes).

    Branch A: 1x1 conv(filters) -> BN -> ReLU on the stride-16 features; branch B: global
    average pool -> 1x1 conv(filters) -> sigmoid, a per-channel gate (the paper pools with a
    49x49 kernel; global pooling, as torchvision does, also works for any input size).
    A * B, x2 bilinear upsampling, 1x1 conv to classes, plus a 1x1 conv to classes of the
    stride-8 features.

    Example:
        >>> low, high = keras.Input((8, 8, 40)), keras.Input((4, 4, 112))
        >>> lraspp_head(low, high, 3).shape
        (None, 8, 8, 3)
    """
    a = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_a_conv")(high)
    a = layers.BatchNormalization(name=f"{name}_a_bn")(a)
    a = layers.ReLU(name=f"{name}_a_relu")(a)
    b = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_b_pool")(high)  # (N, 1, 1, c)
    b = layers.Conv2D(filters, 1, use_bias=False, activation="sigmoid", name=f"{name}_b_conv")(b)
    x = layers.Multiply(name=f"{name}_gate")([a, b])  # broadcasts (N, h, w, f) * (N, 1, 1, f)
    x = BilinearUpsample(2, name=f"{name}_up2")(x)
    x = layers.Conv2D(num_classes, 1, name=f"{name}_high_classifier")(x)
    low = layers.Conv2D(num_classes, 1, name=f"{name}_low_classifier")(low)
    return layers.Add(name=f"{name}_add")([low, x])


def build_mobilenetv3_lraspp(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    variant="large",
    minimalistic=False,
    encoder_trainable=True,
):
    """MobileNetV3 (Large or Small) with the LR-ASPP segmentation head.

    The paper makes the last stage atrous so it stays at stride 16; keras.applications has no
    dilated MobileNetV3, so the encoder stops at the last stride-16 layer (the stride-32 stage
    is dropped) and takes its low-level branch from the last stride-8 layer
    (`SKIPS["mobilenetv3_large" | "mobilenetv3_small"]`). The head's stride-8 logits are
    upsampled x8 (bilinear) to full resolution.

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None / "none", "imagenet" or a weights file (see segkit/models/weights/).
        variant: "large" or "small".
        minimalistic: the minimalistic MobileNetV3 (no squeeze-excite, no hard-swish, 3x3 only).
        encoder_trainable: False freezes the encoder.

    Returns:
        keras.Model named "mobilenetv3_lraspp": float32 images in [0, 1] -> float32 logits.

    Example:
        >>> model = build_mobilenetv3_lraspp(3, variant="small")
        >>> model(np.zeros((1, 64, 96, 3), "float32")).shape
        TensorShape([1, 64, 96, 3])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_choice("variant", variant, tuple(VARIANTS))
    check_bool("minimalistic", minimalistic)
    check_bool("encoder_trainable", encoder_trainable)
    weights = parse_encoder_weights(encoder_weights)

    encoder_name = f"mobilenetv3_{variant}"
    backbone = keras_application(
        VARIANTS[variant],
        encoder_name,
        weights,
        input_shape=input_shape,
        include_top=False,
        minimalistic=minimalistic,
        include_preprocessing=False,  # we rescale ourselves, below
    )
    encoder = feature_extractor(backbone, SKIPS[encoder_name])
    encoder.trainable = encoder_trainable

    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_plus1")(inputs)  # MobileNet wants [-1, 1]
    low, high = encoder(x)  # (N, H/8, W/8, 40 | 24), (N, H/16, W/16, 112 | 48)
    x = lraspp_head(low, high, num_classes)  # (N, H/8, W/8, num_classes)
    outputs = BilinearUpsample(8, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, outputs, name="mobilenetv3_lraspp")

    if weights not in (None, "imagenet"):
        print(load_encoder_weights(encoder, weights))
    return model
