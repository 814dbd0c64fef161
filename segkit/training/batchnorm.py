"""Fused batch normalization for training on TensorFlow: Keras' own layer, a faster kernel.

Keras 3's `BatchNormalization` on the TensorFlow backend casts a bfloat16 input to float32, computes the
moments and the normalization in separate float32 ops, and casts back: several full passes over every
activation, forward and backward. tf-keras (Keras 2) called TensorFlow's fused kernel (FusedBatchNormV3),
which normalizes bfloat16 activations in one pass with float32 statistics. On this CPU that difference
made segmentation_models' ResNet34 U-Net (tf-keras) train 13-15% faster than ours at equal precision.

`fused()` is a context around a training loop (`model.fit`): inside it, `keras.layers.BatchNormalization` takes
the fused kernel wherever the math is the same (4-D NHWC input, no mask, no renorm, not synchronized): in
training steps (batch statistics) the output, the gradients and the moving statistics agree with Keras' own
computation to float rounding, and so do the output and gradients of inference calls (moving statistics: the
validation passes, a distillation teacher, frozen layers) (`tests/test_batchnorm.py`). A frozen teacher's
forward pass in mixed bfloat16 is one kernel per layer instead of a cast, four float32 passes and a cast back.
Everything else runs Keras' code. Only the computation changes: models keep Keras'
layer class, so saved files are plain Keras files. `SEGKIT_FUSED_BN=off` leaves Keras as it is. The loop
traces its step inside the context, so a new run and a resumed one (a checkpoint loaded in a new process)
train on the same kernel; outside it Keras' own code runs.
"""

from __future__ import annotations

import contextlib
import os

import keras
import tensorflow as tf

_keras_call = keras.layers.BatchNormalization.call
_FLOATS = (tf.float32, tf.bfloat16, tf.float16)
MIN_EPSILON = 1.001e-5  # the fused kernel raises smaller epsilons to this


def enabled() -> bool:
    return os.environ.get("SEGKIT_FUSED_BN", "on").lower() not in ("off", "0", "false")


def fusable(layer, inputs, mask) -> bool:
    """Whether the fused kernel computes this call of `layer` exactly as Keras does (a training step with
    batch statistics or an inference call with the moving ones: Keras uses the batch's when `training` and
    the layer is trainable)."""
    return mask is None and not layer.renorm and not layer.synchronized \
        and len(inputs.shape) == 4 and layer.axis in (-1, 3) and inputs.dtype in _FLOATS \
        and layer.epsilon >= MIN_EPSILON


def _call(self, inputs, training=None, mask=None):
    if not fusable(self, inputs, mask):
        return _keras_call(self, inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
    offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
    if not (training and self.trainable):  # inference: the moving statistics, nothing updated
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
            is_training=False)
        return tf.cast(outputs, self.compute_dtype)
    outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
    # The kernel returns the batch variance with Bessel's correction (for tf-keras' moving average);
    # Keras averages the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
    variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
    momentum = self.momentum
    self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(outputs, self.compute_dtype)


def install() -> bool:
    """Route Keras BatchNormalization training steps through the fused kernel (TensorFlow backend only,
    unless SEGKIT_FUSED_BN=off); returns whether it is in place. Idempotent."""
    if not enabled() or keras.backend.backend() != "tensorflow":
        uninstall()
        return False
    keras.layers.BatchNormalization.call = _call
    return True


def uninstall() -> None:
    keras.layers.BatchNormalization.call = _keras_call


@contextlib.contextmanager
def fused():
    """Train with the fused kernel inside this block (see the module docstring); yields whether it is on.
    Whatever was in place before is back afterwards."""
    before = keras.layers.BatchNormalization.call
    try:
        yield install()
    finally:
        keras.layers.BatchNormalization.call = before
