"""The original U-Net (Ronneberger et al. 2015, arXiv:1505.04597) in raw TensorFlow ops.

No Keras anywhere: variables are `tf.Variable`s made in `__init__`, the forward pass is
`tf.nn` ops, training uses `tf.GradientTape` and the small Adam below. Differences from the
paper: 'SAME' padding (output size == input size, no cropping of skips) and batch norm after
every 3x3 conv, as most re-implementations do.

Shapes in comments: N batch, H and W the input size (divisible by 16: four 2x2 pools),
b = base_filters, C = num_classes.
"""

import math
import os

import tensorflow as tf

from segkit.errors import UserError

BN_MOMENTUM = 0.9  # as the Keras models (models.BN_MOMENTUM): moving statistics must keep up in from-scratch runs
BN_EPSILON = 1e-3


def _he_normal(shape, fan_in, seed):
    """He-normal initial value (He et al. 2015): N(0, 2 / fan_in), reproducible from `seed`."""
    return tf.random.stateless_normal(shape, seed=seed, stddev=math.sqrt(2.0 / fan_in))


class ConvBNReLU(tf.Module):
    """3x3 conv (no bias) -> batch norm -> ReLU: (N, h, w, c_in) -> (N, h, w, c_out)."""

    def __init__(self, c_in, c_out, seed, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(_he_normal([3, 3, c_in, c_out], 9 * c_in, seed), name="kernel")
        self.gamma = tf.Variable(tf.ones([c_out]), name="gamma")
        self.beta = tf.Variable(tf.zeros([c_out]), name="beta")
        self.moving_mean = tf.Variable(tf.zeros([c_out]), trainable=False, name="moving_mean")
        self.moving_variance = tf.Variable(tf.ones([c_out]), trainable=False, name="moving_variance")

    def __call__(self, x, training=False):
        x = tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME")  # (N, h, w, c_out)
        if training:
            mean, variance = tf.nn.moments(x, axes=[0, 1, 2])  # (c_out,), (c_out,)
            self.moving_mean.assign(BN_MOMENTUM * self.moving_mean + (1 - BN_MOMENTUM) * mean)
            self.moving_variance.assign(
                BN_MOMENTUM * self.moving_variance + (1 - BN_MOMENTUM) * variance
            )
        else:
            mean, variance = self.moving_mean, self.moving_variance
        x = tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, BN_EPSILON)
        return tf.nn.relu(x)  # (N, h, w, c_out)


class DoubleConv(tf.Module):
    """Two ConvBNReLU: one U-Net level. (N, h, w, c_in) -> (N, h, w, c_out)."""

    def __init__(self, c_in, c_out, seed, name=None):
        super().__init__(name=name)
        self.conv_a = ConvBNReLU(c_in, c_out, seed=(seed[0], 2 * seed[1]), name="conv_a")
        self.conv_b = ConvBNReLU(c_out, c_out, seed=(seed[0], 2 * seed[1] + 1), name="conv_b")

    def __call__(self, x, training=False):
        x = self.conv_a(x, training)  # (N, h, w, c_out)
        return self.conv_b(x, training)  # (N, h, w, c_out)


class UpConv(tf.Module):
    """2x2 transposed conv, stride 2, with bias: (N, h, w, c_in) -> (N, 2h, 2w, c_out)."""

    def __init__(self, c_in, c_out, seed, name=None):
        super().__init__(name=name)
        # conv2d_transpose kernels are (kh, kw, c_out, c_in). With stride == kernel size each
        # output pixel sees one input pixel, so the fan-in is c_in.
        self.kernel = tf.Variable(_he_normal([2, 2, c_out, c_in], c_in, seed), name="kernel")
        self.bias = tf.Variable(tf.zeros([c_out]), name="bias")

    def __call__(self, x):
        shape = tf.shape(x)
        output_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], self.bias.shape[0]])
        x = tf.nn.conv2d_transpose(x, self.kernel, output_shape, strides=2, padding="SAME")
        return x + self.bias  # (N, 2h, 2w, c_out)


class Conv1x1(tf.Module):
    """1x1 conv with bias (the classifier): (N, h, w, c_in) -> (N, h, w, c_out)."""

    def __init__(self, c_in, c_out, seed, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(_he_normal([1, 1, c_in, c_out], c_in, seed), name="kernel")
        self.bias = tf.Variable(tf.zeros([c_out]), name="bias")

    def __call__(self, x):
        return tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME") + self.bias  # (N, h, w, c_out)


def _check_int(arg, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{arg} must be an int >= {minimum}, got {value!r}")


def _max_pool(x):
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")  # (N, h/2, w/2, c)


class UNetTF(tf.Module):
    """U-Net: 4 down levels + bottleneck + 4 up levels; 23 convs (18 3x3, 4 up-convs, one 1x1).

    Channels double from `base_filters` at each level: b, 2b, 4b, 8b, 16b (64 .. 1024 in the
    paper). Call it on float32 images in [0, 1], (N, H, W, 3) with H, W divisible by 16;
    returns float32 logits (N, H, W, num_classes). `training=True` uses batch statistics and
    updates the moving mean/variance (momentum 0.9).

    Example:
        >>> model = UNetTF(num_classes=3, base_filters=8)
        >>> model(tf.zeros([2, 64, 96, 3])).shape
        TensorShape([2, 64, 96, 3])
    """

    def __init__(self, num_classes, base_filters=64, seed=0, name="unet_tf"):
        _check_int("num_classes", num_classes, minimum=1)
        _check_int("base_filters", base_filters, minimum=1)
        _check_int("seed", seed, minimum=0)
        super().__init__(name=name)
        b = base_filters
        self.num_classes = num_classes
        self.base_filters = base_filters
        # Stateless seeds (seed, k), one k per module: DoubleConv k uses 2k and 2k + 1 inside.
        with self.name_scope:
            self.enc1 = DoubleConv(3, b, seed=(seed, 1), name="enc1")
            self.enc2 = DoubleConv(b, 2 * b, seed=(seed, 2), name="enc2")
            self.enc3 = DoubleConv(2 * b, 4 * b, seed=(seed, 3), name="enc3")
            self.enc4 = DoubleConv(4 * b, 8 * b, seed=(seed, 4), name="enc4")
            self.bottleneck = DoubleConv(8 * b, 16 * b, seed=(seed, 5), name="bottleneck")
            self.up4 = UpConv(16 * b, 8 * b, seed=(seed, 100), name="up4")
            self.dec4 = DoubleConv(16 * b, 8 * b, seed=(seed, 6), name="dec4")
            self.up3 = UpConv(8 * b, 4 * b, seed=(seed, 101), name="up3")
            self.dec3 = DoubleConv(8 * b, 4 * b, seed=(seed, 7), name="dec3")
            self.up2 = UpConv(4 * b, 2 * b, seed=(seed, 102), name="up2")
            self.dec2 = DoubleConv(4 * b, 2 * b, seed=(seed, 8), name="dec2")
            self.up1 = UpConv(2 * b, b, seed=(seed, 103), name="up1")
            self.dec1 = DoubleConv(2 * b, b, seed=(seed, 9), name="dec1")
            self.head = Conv1x1(b, num_classes, seed=(seed, 104), name="head")

    def __call__(self, x, training=False):
        x = tf.cast(x, tf.float32)  # (N, H, W, 3); bfloat16 etc. inputs computed in float32
        if x.shape.rank != 4 or x.shape[-1] != 3 or any(s is not None and s % 16 for s in x.shape[1:3]):
            raise UserError(f"UNetTF takes images (N, H, W, 3) with H, W divisible by 16, got {x.shape}")
        tf.debugging.assert_equal(
            tf.shape(x)[1:3] % 16, 0, message="UNetTF: image height and width must be divisible by 16"
        )
        e1 = self.enc1(x, training)  # (N, H, W, b)
        e2 = self.enc2(_max_pool(e1), training)  # (N, H/2, W/2, 2b)
        e3 = self.enc3(_max_pool(e2), training)  # (N, H/4, W/4, 4b)
        e4 = self.enc4(_max_pool(e3), training)  # (N, H/8, W/8, 8b)
        x = self.bottleneck(_max_pool(e4), training)  # (N, H/16, W/16, 16b)
        x = tf.concat([e4, self.up4(x)], axis=-1)  # (N, H/8, W/8, 8b + 8b)
        x = self.dec4(x, training)  # (N, H/8, W/8, 8b)
        x = tf.concat([e3, self.up3(x)], axis=-1)  # (N, H/4, W/4, 4b + 4b)
        x = self.dec3(x, training)  # (N, H/4, W/4, 4b)
        x = tf.concat([e2, self.up2(x)], axis=-1)  # (N, H/2, W/2, 2b + 2b)
        x = self.dec2(x, training)  # (N, H/2, W/2, 2b)
        x = tf.concat([e1, self.up1(x)], axis=-1)  # (N, H, W, b + b)
        x = self.dec1(x, training)  # (N, H, W, b)
        return self.head(x)  # (N, H, W, C) logits


def build_unet_tf(num_classes, input_shape=(None, None, 3), encoder_weights=None, base_filters=64, seed=0):
    """`UNetTF` behind the common builder signature.

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 16; only checked (a tf.Module
            takes any such size).
        encoder_weights: must be None or "none": U-Net has no pretrained encoder.
        base_filters: channels of the first level (64 in the paper).
        seed: seed of the He-normal initialisation.

    Example:
        >>> build_unet_tf(3, base_filters=8)(tf.zeros([1, 32, 32, 3])).shape
        TensorShape([1, 32, 32, 3])
    """
    if encoder_weights not in (None, "none", "None"):
        raise UserError(
            f"unet_tf has no pretrained encoder; encoder_weights must be None or 'none', "
            f"got {encoder_weights!r}"
        )
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) == 3 and input_shape[2] == 3
    if not ok or any(s is not None and (not isinstance(s, int) or s <= 0 or s % 16) for s in input_shape[:2]):
        raise UserError(
            f"input_shape must be (height, width, 3) with height and width None or a positive "
            f"multiple of 16, got {input_shape!r}"
        )
    return UNetTF(num_classes, base_filters=base_filters, seed=seed)


class AdamTF(tf.Module):
    """Adam (Kingma & Ba 2015) on tf.Variables; its state is checkpointable.

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        var <- var - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

    The slots are made for `variables` at construction, so `apply` must get the same list
    (e.g. `model.trainable_variables`, whose order is fixed).

    Example:
        >>> opt = AdamTF(model.trainable_variables)  # doctest: +SKIP
        >>> opt.apply(grads, model.trainable_variables, lr=1e-3)  # doctest: +SKIP
    """

    def __init__(self, variables, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="adam_tf"):
        super().__init__(name=name)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        with self.name_scope:
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
            self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]

    def apply(self, grads, variables, lr):
        assert len(grads) == len(variables) == len(self.m), "apply() needs the variables AdamTF was made for"
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        lr_t = lr * tf.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            assert var.shape == m.shape, f"{var.name}: shape {var.shape} but slot {m.shape}"
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
            v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
            var.assign_sub(lr_t * m / (tf.sqrt(v) + self.epsilon))


def make_train_step(model, loss_fn, optimizer, return_logits=False):
    """A `tf.function` (images, masks, lr) -> loss doing one optimiser step on `model`.

    `loss_fn(masks, logits)` returns a scalar; with `return_logits` the step returns
    (loss, logits), e.g. to log each term of a composite loss. Gradients are taken over
    `model.trainable_variables` (the moving statistics are not trainable). One trace serves
    every batch and image size.

    Example:
        >>> step = make_train_step(model, loss_fn, AdamTF(model.trainable_variables))  # doctest: +SKIP
        >>> loss = step(images, masks, 1e-3)  # doctest: +SKIP
    """

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="images"),
            tf.TensorSpec(None, tf.int32, name="masks"),
            tf.TensorSpec([], tf.float32, name="lr"),
        ]
    )
    def train_step(images, masks, lr):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)  # (N, H, W, C)
            loss = loss_fn(masks, logits)
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables, lr)
        return (loss, logits) if return_logits else loss

    return train_step


def export_savedmodel(model, path):
    """Write `model` as a SavedModel whose `serving_default` maps "images" to {"logits": ...}.

    Example:
        >>> export_savedmodel(model, "runs/x/savedmodel")  # doctest: +SKIP
        >>> tf.saved_model.load("runs/x/savedmodel").signatures["serving_default"](
        ...     images=tf.zeros([1, 64, 64, 3]))["logits"].shape  # doctest: +SKIP
        TensorShape([1, 64, 64, 3])
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve(images):
        return {"logits": model(images, training=False)}

    tf.saved_model.save(model, os.fspath(path), signatures={"serving_default": serve})
