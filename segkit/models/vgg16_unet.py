"""VGG16 encoder (keras.applications) + U-Net decoder, as segmentation_models' `Unet("vgg16")`."""

import keras
import numpy as np
from keras import layers

from segkit.models.blocks import SKIPS, check_bool, check_input_shape, check_num_classes
from segkit.models.blocks import conv_bn_relu, feature_extractor
from segkit.models.unet import encoder_unet
from segkit.models.weights import keras_application, parse_encoder_weights

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.vgg16.preprocess_input


def caffe_preprocess(x, name="caffe_preprocess"):
    """[0, 1] RGB -> what VGG16's ImageNet weights expect: 0..255 BGR minus the ImageNet mean.

    A frozen 1x1 conv does all three steps (scale, channel swap, mean) with standard layers:
    out[..., j] = 255 * x[..., 2 - j] - mean_bgr[j]. Its weights live in the layer config
    (Constant initialisers), so saving and reloading needs nothing custom.

    Example:
        >>> caffe_preprocess(keras.Input((None, None, 3))).shape
        (None, None, None, 3)
    """
    kernel = np.zeros((1, 1, 3, 3), "float32")
    for j in range(3):
        kernel[0, 0, 2 - j, j] = 255.0
    return layers.Conv2D(
        3,
        1,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(-np.array(CAFFE_MEAN_BGR, "float32")),
        trainable=False,
        dtype="float32",  # 255 * x - mean in bfloat16 would be off by up to 1 grey level
        name=name,
    )(x)


def build_vgg16_unet(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    encoder_trainable=True,
):
    """U-Net with a VGG16 encoder.

    As segmentation_models: skips `block1_conv2` .. `block5_conv3` (stride 1 .. 16,
    `SKIPS["vgg16"]`), the decoder starts from `block5_pool` (stride 32) after a "center" of
    two 3x3 Conv-BN-ReLU(512), then `blocks.unet_decoder` (256, 128, 64, 32, 16) and a 3x3
    conv to the logits. Caffe preprocessing happens inside the model (`caffe_preprocess`).

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None / "none", "imagenet" or a weights file (see segkit/models/weights/).
        encoder_trainable: False freezes the encoder.

    Returns:
        keras.Model named "vgg16_unet": float32 images in [0, 1] -> float32 logits.

    Example:
        >>> model = build_vgg16_unet(3)
        >>> model(np.zeros((1, 64, 64, 3), "float32")).shape
        TensorShape([1, 64, 64, 3])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_bool("encoder_trainable", encoder_trainable)
    weights = parse_encoder_weights(encoder_weights)

    backbone = keras_application(
        keras.applications.VGG16, "vgg16", weights, input_shape=input_shape, include_top=False
    )
    encoder = feature_extractor(backbone, SKIPS["vgg16"])  # skips at stride 1..16, then (N, H/32, W/32, 512)

    def center(x):
        return conv_bn_relu(conv_bn_relu(x, 512, name="center_a"), 512, name="center_b")

    return encoder_unet("vgg16_unet", num_classes, input_shape, encoder, caffe_preprocess, weights,
                        encoder_trainable, center=center)
