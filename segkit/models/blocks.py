"""Building blocks shared by the Keras models: encoder tables, decoder blocks, argument checks.

Every block is a small function `block(x, ..., name=...)` that names its layers after the
stage it belongs to, so `model.summary()` and weight files read as `decoder_stage2a_conv`.
"""

import keras
from keras import layers

from segkit import catalog
from segkit.errors import UserError

# ImageNet's per-channel statistics for images in [0, 1], RGB (torchvision's, as keras-hub and
# segmentation_models normalise ResNet inputs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Which encoder layers feed the decoder, ordered shallow -> deep (stride 2, 4, ...).
# The last name is the deepest feature map the decoder starts from; the others are skips.
SKIPS = {
    # TensorFlow's image-segmentation tutorial (pix2pix decoder on MobileNetV2).
    "mobilenetv2": (
        "block_1_expand_relu",  # stride 2
        "block_3_expand_relu",  # stride 4
        "block_6_expand_relu",  # stride 8
        "block_13_expand_relu",  # stride 16
        "block_16_project",  # stride 32
    ),
    # LR-ASPP: last layer at stride 8 (low-level branch), last layer at stride 16 (head).
    "mobilenetv3_large": ("expanded_conv_5_add", "expanded_conv_11_add"),
    "mobilenetv3_small": ("expanded_conv_2_add", "expanded_conv_7_add"),
    # Our own ResNet34 (see resnet34_unet.py); same strides as segmentation_models' skips.
    "resnet34": (
        "stem_relu",  # stride 2
        "stage1_block3_out",  # stride 4
        "stage2_block4_out",  # stride 8
        "stage3_block6_out",  # stride 16
        "stage4_block3_out",  # stride 32
    ),
    # segmentation_models' VGG16 table: five skips (stride 1 .. 16), decoder starts at block5_pool.
    "vgg16": (
        "block1_conv2",  # stride 1
        "block2_conv2",  # stride 2
        "block3_conv3",  # stride 4
        "block4_conv3",  # stride 8
        "block5_conv3",  # stride 16
        "block5_pool",  # stride 32
    ),
}


# ---------------------------------------------------------------------------------------------
# Argument checks (shared by every builder): say which argument, what is allowed, what was given.


def check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive int, got {num_classes!r}")


def check_input_shape(input_shape, divisor=catalog.MULTIPLE):
    """`input_shape` is (H, W, 3) with H, W None or a positive multiple of `divisor`."""
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) == 3 and input_shape[2] == 3
    if ok:
        for size in input_shape[:2]:
            if size is not None and (not isinstance(size, int) or size <= 0 or size % divisor):
                ok = False
    if not ok:
        raise UserError(
            f"input_shape must be (height, width, 3) with height and width None or a positive "
            f"multiple of {divisor}, got {input_shape!r}"
        )
    return tuple(input_shape)


def check_choice(option, value, allowed):
    # True == 1 in Python: keep alpha=True from passing as 1.0 and dropout=1 as True.
    want_bool = all(isinstance(a, bool) for a in allowed)
    ok = isinstance(value, bool) == want_bool and value in allowed
    if not ok:
        raise UserError(f"{option} must be one of {list(allowed)}, got {value!r}")
    return value


def check_bool(option, value):
    return check_choice(option, value, (True, False))


# ---------------------------------------------------------------------------------------------
# Encoder plumbing.


def feature_extractor(backbone, layer_names, name="encoder"):
    """A `keras.Model` from `backbone`'s input to the outputs of `layer_names` (in that order).

    The encoder is one nested model, so `model.get_layer("encoder")` is what weight loading and
    `encoder_trainable` act on.

    Example:
        >>> base = keras.applications.MobileNetV2(include_top=False, weights=None)
        >>> encoder = feature_extractor(base, SKIPS["mobilenetv2"])
        >>> [t.shape[-1] for t in encoder.outputs]
        [96, 144, 192, 576, 320]
    """
    missing = [n for n in layer_names if n not in {layer.name for layer in backbone.layers}]
    assert not missing, f"{backbone.name} has no layers {missing}"  # a wrong SKIPS table
    outputs = [backbone.get_layer(n).output for n in layer_names]
    return keras.Model(backbone.input, outputs, name=name)


# ---------------------------------------------------------------------------------------------
# Decoder blocks.


def conv_bn_relu(x, filters, kernel_size=3, name="conv"):
    """Conv (no bias: BN has one) -> BatchNorm -> ReLU, 'same' padding.

    Example:
        >>> x = conv_bn_relu(keras.Input((None, None, 8)), 16, name="decoder_stage0a")
        >>> x.shape
        (None, None, None, 16)
    """
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def upsample(x, filters, size=3, dropout=False, name="up"):
    """pix2pix upsample block: Conv2DTranspose(stride 2) -> BatchNorm -> [Dropout(0.5)] -> ReLU.

    Doubles H and W. Same as `tensorflow_examples.models.pix2pix.upsample` (Isola et al. 2017),
    including its N(0, 0.02) kernel initialiser.

    Example:
        >>> upsample(keras.Input((4, 4, 32)), 16, name="up0").shape
        (None, 8, 8, 16)
    """
    x = layers.Conv2DTranspose(
        filters,
        size,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
        name=f"{name}_convT",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if dropout:
        x = layers.Dropout(0.5, name=f"{name}_dropout")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def unet_decoder(features, skips, filters=(256, 128, 64, 32, 16), name="decoder"):
    """The U-Net decoder of segmentation_models' `Unet` (upsampling variant).

    Each stage i: UpSampling2D(2) -> concat with `skips[i]` (if there is one) -> two 3x3
    Conv-BN-ReLU with `filters[i]` channels. With 5 stages a stride-32 `features` map comes back
    to full resolution.

    Args:
        features: deepest feature map, (N, H/32, W/32, C).
        skips: skip tensors ordered deep -> shallow (stride 16, 8, 4, 2, ...); may be shorter
            than `filters`, the last stages then have no skip.
        filters: channels of each stage.
        name: prefix of the layer names (`{name}_stage{i}...`).

    Returns:
        (N, H, W, filters[-1]) tensor.

    Example:
        >>> f = keras.Input((2, 2, 64)); s = keras.Input((4, 4, 32))
        >>> unet_decoder(f, [s], filters=(16, 8)).shape
        (None, 8, 8, 8)
    """
    assert len(skips) <= len(filters), "more skips than decoder stages"
    x = features
    for i, stage_filters in enumerate(filters):
        stage = f"{name}_stage{i}"
        x = layers.UpSampling2D(2, name=f"{stage}_upsample")(x)
        if i < len(skips):
            x = layers.Concatenate(name=f"{stage}_concat")([x, skips[i]])
        x = conv_bn_relu(x, stage_filters, name=f"{stage}a")
        x = conv_bn_relu(x, stage_filters, name=f"{stage}b")
    return x



@keras.saving.register_keras_serializable(package="segkit")
class BilinearUpsample(layers.Layer):
    """Bilinear upsampling by an integer factor for inputs whose H, W are only known at run time.

    keras' `UpSampling2D(interpolation="bilinear")` checks the target size with a Python `if`
    (keras.ops.image.resize), which fails inside a traced function when H and W are symbolic, as
    for validation batches of native-size images. (nearest-neighbour UpSampling2D is unaffected.)
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        import tensorflow as tf

        shape = tf.shape(x)
        out = tf.image.resize(x, (shape[1] * self.factor, shape[2] * self.factor), method="bilinear")
        return tf.cast(out, self.compute_dtype)  # tf.image.resize returns float32

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.factor, None if w is None else w * self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="segkit")
class ResizeLike(layers.Layer):
    """Bilinear resize of `x` to the height and width of `reference`: called on [x, reference].

    For maps whose sizes are not a fixed multiple of each other (a stride-64 map of an input whose side is
    a multiple of 32 only), and for inputs whose H, W are known only at run time.
    """

    def call(self, inputs):
        import tensorflow as tf

        x, reference = inputs
        out = tf.image.resize(x, tf.shape(reference)[1:3], method="bilinear")
        return tf.cast(out, self.compute_dtype)  # tf.image.resize returns float32

    def compute_output_shape(self, input_shapes):
        (n, _, _, c), (_, h, w, _) = input_shapes
        return (n, h, w, c)
