"""segkit.training.batchnorm: Keras' BatchNormalization through TensorFlow's fused kernel computes what Keras'
own code computes (outputs, gradients, moving statistics), in training steps and inference calls, in float32
and mixed bfloat16, frozen layers included, and leaves everything else (masks, other shapes, saved files) to
Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from segkit.training import batchnorm


@pytest.fixture
def keras_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")
    batchnorm.install()  # as training leaves it


def one_step(fused: bool, policy: str, shape=(4, 8, 10, 16), momentum=0.9, training=True):
    """Output, gradients (input, gamma, beta) and moving statistics of one call of a fresh layer."""
    keras.mixed_precision.set_global_policy(policy)
    batchnorm.install() if fused else batchnorm.uninstall()
    rng = np.random.default_rng(0)
    layer = keras.layers.BatchNormalization(momentum=momentum)
    x = tf.constant(rng.normal(2, 3, shape).astype("float32"))
    weights = tf.constant(rng.normal(size=shape).astype("float32"))
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]))
    layer.beta.assign(np.linspace(-1, 1, shape[-1]))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return {"y": y, "dx": grads[0], "dgamma": grads[1], "dbeta": grads[2],
            "moving_mean": layer.moving_mean.numpy(), "moving_variance": layer.moving_variance.numpy()}


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("policy, atol", [("float32", 1e-5), ("mixed_bfloat16", 1e-2)])
def test_fused_call_matches_keras(keras_policy, policy, atol, training):
    keras_step, fused_step = one_step(False, policy, training=training), one_step(True, policy, training=training)
    assert fused_step["y"].dtype == keras_step["y"].dtype  # the policy's compute dtype
    for name in keras_step:
        ours, theirs = (np.asarray(tf.cast(s[name], tf.float32)) for s in (fused_step, keras_step))
        scale = max(1.0, float(np.max(np.abs(theirs))))
        assert np.max(np.abs(ours - theirs)) <= atol * scale, name
    if not training:  # the moving statistics are used and left as they were
        assert (fused_step["moving_mean"] == 0).all() and (fused_step["moving_variance"] == 1).all()
    if policy == "float32" and training:  # the moving statistics follow the biased batch variance, as Keras'
        # do, not the kernel's unbiased one (320 values per channel: they differ by 0.3%; bfloat16 inputs blur that)
        x = np.random.default_rng(0).normal(2, 3, (4, 8, 10, 16)).astype("float32")
        expected = 0.9 * 1.0 + 0.1 * x.reshape(-1, 16).var(axis=0)
        np.testing.assert_allclose(fused_step["moving_variance"], expected, rtol=2e-5)


def test_frozen_layer_uses_moving_statistics(keras_policy):
    # trainable=False: Keras normalizes with the moving statistics even in a training step; so does the kernel
    outputs = []
    for fused in (False, True):
        keras.mixed_precision.set_global_policy("float32")
        batchnorm.install() if fused else batchnorm.uninstall()
        layer = keras.layers.BatchNormalization()
        x = tf.constant(np.random.default_rng(0).normal(2, 3, (2, 4, 4, 3)).astype("float32"))
        layer.build(x.shape)
        layer.moving_mean.assign([1.0, 2.0, 3.0])
        layer.moving_variance.assign([4.0, 1.0, 0.25])
        layer.trainable = False
        outputs.append(layer(x, training=True).numpy())
    expected = (x.numpy() - [1.0, 2.0, 3.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + layer.epsilon)
    np.testing.assert_allclose(outputs[1], expected, atol=1e-5)
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


def test_other_calls_run_keras_code(keras_policy):
    batchnorm.install()
    layer = keras.layers.BatchNormalization()
    x = tf.zeros((2, 4, 4, 3))
    layer.build(x.shape)
    assert batchnorm.fusable(layer, x, None)
    assert not batchnorm.fusable(layer, x, tf.ones((2, 4, 4)))  # a mask
    assert not batchnorm.fusable(layer, tf.zeros((2, 5, 3)), None)  # not 4-D
    assert not batchnorm.fusable(keras.layers.BatchNormalization(epsilon=1e-6), x, None)  # below the kernel's


def test_switch_off(monkeypatch, keras_policy):
    monkeypatch.setenv("SEGKIT_FUSED_BN", "off")
    assert batchnorm.install() is False
    assert keras.layers.BatchNormalization.call is batchnorm._keras_call
    monkeypatch.delenv("SEGKIT_FUSED_BN")
    assert batchnorm.install() is True and keras.layers.BatchNormalization.call is batchnorm._call
