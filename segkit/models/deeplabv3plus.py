"""DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation") on a keras-hub ResNet encoder, laid out as keras-hub's DeepLabV3Backbone and
DeepLabV3ImageSegmenter.

keras-hub's DeepLabV3Backbone upsamples with UpSampling2D(interpolation="bilinear"), which cannot be
traced for images whose size is known only at run time (see models/blocks.py, BilinearUpsample), so the
head is rebuilt here from keras-hub's own SpatialPyramidPooling layer, with the same layer names and
widths, and resizes with ResizeLike. The encoder is a keras_hub.models.ResNetBackbone, whose ImageNet
presets (and a DeepLabV3 preset's image encoder) load into it.
"""

import keras
import keras_hub
from keras import layers
from keras_hub.src.models.deeplab_v3.deeplab_v3_layers import SpatialPyramidPooling

from segkit.models.blocks import ResizeLike, check_bool, check_choice, check_input_shape, check_num_classes
from segkit.models.segformer import share_dtype_policy
from segkit.models.weights import keras_hub_weights, load_encoder_weights, load_preset_weights

_RESNET = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
               stackwise_num_strides=[1, 2, 2, 2])
# keras_hub.models.ResNetBackbone arguments (those keras-hub's timm converter uses for these
# architectures; resnet18 and resnet50 have the parameter counts of the presets' metadata) and the
# keras-hub ImageNet preset of each. keras-hub's deeplab_v3_plus_resnet50_pascalvoc preset holds a
# resnet50 (its metadata count is our resnet50 model's without the 21-class classifier).
ARCHITECTURES = {
    "resnet18": dict(stackwise_num_blocks=[2, 2, 2, 2], block_type="basic_block", use_pre_activation=False,
                     **_RESNET),
    "resnet50": dict(stackwise_num_blocks=[3, 4, 6, 3], block_type="bottleneck_block", use_pre_activation=False,
                     **_RESNET),
    "resnet50_v2": dict(stackwise_num_blocks=[3, 4, 6, 3], block_type="bottleneck_block", use_pre_activation=True,
                        **_RESNET),
}
IMAGENET_PRESETS = {"resnet18": "resnet_18_imagenet", "resnet50": "resnet_50_imagenet",
                    "resnet50_v2": "resnet_v2_50_imagenet"}
# keras-hub's DeepLabV3Backbone example (and its defaults): ASPP on the stride-32 map, low-level
# features from the stride-4 map projected to 48 channels, 256-channel head. (The paper's rates are for
# stride 16; at stride 32 the rate-12 and -18 branches see mostly padding below ~400-576 px images.)
DILATION_RATES = (6, 12, 18)
ASPP_FILTERS = 256
PROJECTION_FILTERS = 48
HEAD_FILTERS = 256


@keras.saving.register_keras_serializable(package="segkit")
class ASPP(SpatialPyramidPooling):
    """keras-hub's SpatialPyramidPooling, reloadable: when a saved model is loaded, Keras builds the
    layer from its stored input shape, a list, which keras-hub's build cannot concatenate to a tuple;
    and the sublayers its build makes get the layer's dtype policy (see `share_dtype_policy`)."""

    def build(self, input_shape):
        super().build(tuple(input_shape))
        share_dtype_policy(self)


def resnet_encoder(architecture, input_shape=(None, None, 3), name="encoder"):
    """A keras_hub.models.ResNetBackbone's stride-4 map (pyramid level P2) and its output at stride 32.

    The output is level P5, after the final BN-ReLU for the pre-activation ResNetV2 (whose P5 is the
    un-normalised sum of the last block), so every layer of the backbone, and of its presets, is used.

    Example:
        >>> low, high = resnet_encoder(ARCHITECTURES["resnet18"])(np.zeros((1, 64, 96, 3), "float32"))
        >>> low.shape, high.shape
        (TensorShape([1, 16, 24, 64]), TensorShape([1, 2, 3, 512]))
    """
    backbone = keras_hub.models.ResNetBackbone(image_shape=input_shape, **architecture)
    return keras.Model(backbone.input, [backbone.pyramid_outputs["P2"], backbone.output], name=name)


def deeplabv3plus_head(low, high, num_classes, name=""):
    """DeepLabV3+ decoder: (N, H/4, W/4, c_low) and (N, H/32, W/32, c_high) maps ->
    (N, H/4, W/4, num_classes) logits.

    ASPP (keras-hub's SpatialPyramidPooling: a 1x1 conv, three dilated 3x3 convs, image pooling;
    concatenated and projected to 256) on the stride-32 map, bilinear upsampling to stride 4, concat
    with the low-level map projected to 48 channels (1x1 conv-BN-ReLU), 1x1 conv(256)-BN-ReLU, 1x1
    conv to classes (no bias). keras-hub applies that last conv after upsampling to full size; a
    1x1 conv without bias commutes with bilinear resizing, so doing it first gives the same logits
    for 1/16 of its cost.

    Example:
        >>> low, high = keras.Input((16, 16, 64)), keras.Input((2, 2, 512))
        >>> deeplabv3plus_head(low, high, 3).shape
        (None, 16, 16, 3)
    """
    x = ASPP(dilation_rates=list(DILATION_RATES), num_channels=ASPP_FILTERS,
                              name=f"{name}spatial_pyramid_pooling")(high)  # (N, H/32, W/32, 256)
    x = ResizeLike(name=f"{name}encoder_output_upsampling")([x, low])  # (N, H/4, W/4, 256)
    y = layers.Conv2D(PROJECTION_FILTERS, 1, use_bias=False, name=f"{name}decoder_conv")(low)
    y = layers.BatchNormalization(name=f"{name}decoder_norm")(y)
    y = layers.ReLU(name=f"{name}decoder_relu")(y)  # (N, H/4, W/4, 48)
    x = layers.Concatenate(name=f"{name}encoder_decoder_concat")([x, y])
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name=f"{name}segmentation_head_conv")(x)
    x = layers.BatchNormalization(name=f"{name}segmentation_head_norm")(x)
    x = layers.ReLU(name=f"{name}segmentation_head_relu")(x)
    return layers.Conv2D(num_classes, 1, use_bias=False, name=f"{name}segmentation_output")(x)


def build_deeplabv3plus(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    variant="resnet18",
    encoder_trainable=True,
):
    """DeepLabV3+ with a keras-hub ResNet encoder, float32 logits at the input size.

    ASPP runs on the encoder's stride-32 map (keras-hub's ResNets have no dilated last stage), the
    decoder at stride 4; its logits are resized bilinearly to the input size. Images are normalised
    inside the model: ImageNet mean and std, or the scale and offset of the preset's keras-hub
    ImageConverter.

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None / "none", "imagenet" (the variant's keras-hub ImageNet preset,
            IMAGENET_PRESETS), a keras-hub ResNet preset (a name, a kaggle:// or hf:// handle, or a
            local folder written by `save_to_preset`; a DeepLabV3 preset gives its image encoder), or
            a weights file (see segkit/models/weights/).
        variant: the encoder, "resnet18", "resnet50" or "resnet50_v2" (ARCHITECTURES); a preset
            must hold that architecture.
        encoder_trainable: False freezes the encoder.

    Returns:
        keras.Model named "deeplabv3plus": float32 images in [0, 1], (N, H, W, 3) -> float32 logits
        (N, H, W, num_classes).

    Example:
        >>> model = build_deeplabv3plus(12)
        >>> model(np.zeros((1, 64, 96, 3), "float32")).shape
        TensorShape([1, 64, 96, 12])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_choice("variant", variant, tuple(ARCHITECTURES))
    check_bool("encoder_trainable", encoder_trainable)
    weights, source, (scale, offset) = keras_hub_weights(
        encoder_weights, keras_hub.models.ResNetBackbone, ARCHITECTURES, variant, IMAGENET_PRESETS, "deeplabv3plus"
    )

    encoder = resnet_encoder(ARCHITECTURES[variant], input_shape)
    encoder.trainable = encoder_trainable
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(scale, offset, name="preprocess")(inputs)  # keras-hub's ImageConverter, on [0, 1]
    low, high = encoder(x)  # (N, H/4, W/4, 64 | 256), (N, H/32, W/32, 512 | 2048)
    x = deeplabv3plus_head(low, high, num_classes)  # (N, H/4, W/4, num_classes)
    outputs = ResizeLike(dtype="float32", name="logits")([x, inputs])
    model = keras.Model(inputs, outputs, name="deeplabv3plus")

    if source is not None:
        print(load_preset_weights(source, encoder, weights.handle))
    elif weights is not None:
        print(load_encoder_weights(encoder, weights))
    return model
