"""ResNet34 encoder (He et al. 2016, built here: keras.applications has none) + U-Net decoder."""

import keras
from keras import layers

from segkit.errors import UserError
from segkit.models.blocks import IMAGENET_MEAN, IMAGENET_STD, SKIPS, check_bool, check_input_shape, check_num_classes
from segkit.models.blocks import feature_extractor
from segkit.models.unet import encoder_unet
from segkit.models.weights import no_imagenet_message, parse_encoder_weights

BLOCKS_PER_STAGE = (3, 4, 6, 3)
STAGE_FILTERS = (64, 128, 256, 512)
BN_EPSILON = 1e-5  # torchvision's value, so ported PyTorch weights give the same outputs


def basic_block(x, filters, stride, name):
    """ResNet basic block: 3x3 conv(stride) -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU.

    The shortcut is a 1x1 conv(stride) + BN when the shape changes. Strided convs pad 1 pixel
    on each side explicitly, as PyTorch does ('same' pads 0 before / 1 after).

    Example:
        >>> basic_block(keras.Input((8, 8, 64)), 128, 2, name="stage2_block1").shape
        (None, 4, 4, 128)
    """
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut_conv"
        )(x)
        shortcut = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_shortcut_bn")(shortcut)
    if stride != 1:
        x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = layers.Conv2D(
        filters, 3, strides=stride, padding="valid" if stride != 1 else "same", use_bias=False,
        name=f"{name}_conv1",
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn1")(x)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet34(input_shape=(None, None, 3), name="resnet34"):
    """ResNet34 conv body (no pooling / fc), input already normalised; a keras.Model.

    Stem: 7x7/2 conv(64) -> BN -> ReLU (`stem_relu`, stride 2) -> 3x3/2 max-pool; then
    stages of 3, 4, 6, 3 basic blocks with 64, 128, 256, 512 filters, stride 2 at the start of
    stages 2-4. Layers are named `stage{s}_block{b}_conv1` etc.; block outputs
    `stage{s}_block{b}_out`. 21,284,672 trainable parameters, as torchvision's resnet34 minus fc.

    Example:
        >>> resnet34().get_layer("stage4_block3_out").output.shape
        (None, None, None, 512)
    """
    inputs = keras.Input(input_shape, name="normalised_image")
    x = layers.ZeroPadding2D(3, name="stem_pad")(inputs)  # (N, H+6, W+6, 3)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="stem_conv")(x)  # (N, H/2, W/2, 64)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # zeros == -inf padding after a ReLU
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)  # (N, H/4, W/4, 64)
    for s, (blocks, filters) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_FILTERS), start=1):
        for b in range(1, blocks + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            x = basic_block(x, filters, stride, name=f"stage{s}_block{b}")
    return keras.Model(inputs, x, name=name)  # (N, H/32, W/32, 512)


def build_resnet34_unet(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    encoder_trainable=True,
):
    """U-Net with a ResNet34 encoder, as segmentation_models' `Unet("resnet34")`.

    The decoder (`blocks.unet_decoder`, filters 256, 128, 64, 32, 16) starts from the stride-32
    output of stage 4 and takes skips at stride 16, 8, 4, 2 (`SKIPS["resnet34"]`); a 3x3 conv
    gives the logits. Inputs are normalised with the ImageNet mean/std inside the model.

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None / "none" or a weights file; keras.applications has no ImageNet
            ResNet34, so "imagenet" raises UserError.
        encoder_trainable: False freezes the encoder.

    Returns:
        keras.Model named "resnet34_unet": float32 images in [0, 1] -> float32 logits.

    Example:
        >>> model = build_resnet34_unet(3)
        >>> model(np.zeros((1, 64, 64, 3), "float32")).shape
        TensorShape([1, 64, 64, 3])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_bool("encoder_trainable", encoder_trainable)
    weights = parse_encoder_weights(encoder_weights)
    if weights == "imagenet":
        raise UserError(no_imagenet_message("resnet34", "keras.applications has none"))

    encoder = feature_extractor(resnet34(input_shape), SKIPS["resnet34"])
    normalise = layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD],
                                     name="imagenet_normalise")
    return encoder_unet("resnet34_unet", num_classes, input_shape, encoder, normalise, weights, encoder_trainable)
