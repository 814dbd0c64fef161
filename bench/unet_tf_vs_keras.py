"""Step time of the raw-TensorFlow U-Net (models.unet_tf) against the same U-Net in Keras layers.

    python -m bench.unet_tf_vs_keras --image-size 128 128 --batch-size 4 --base-filters 32 --steps 10

Both models have the same layers (3x3 conv without bias -> BN(momentum 0.99, eps 1e-3) -> ReLU,
2x2 max-pool, 2x2 stride-2 transposed conv with bias, concat [skip, up], 1x1 conv head), the
same parameter count, the same loss (masked softmax cross-entropy) and Adam with the same
hyper-parameters, on the same random batch. Timed, after warm-up steps:
    raw          models.unet_tf.make_train_step: tf.function + GradientTape + AdamTF;
    keras        the same tf.function + GradientTape step around the Keras model and
                 keras.optimizers.Adam (so the difference is layers + optimizer only);
    keras-fit    model.compile(jit_compile=False) + model.train_on_batch (Keras' own loop).
Each step's loss is fetched (a device sync) before the clock stops. No XLA anywhere.
"""

import argparse
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bench import machine
from segkit.errors import UserError
from segkit.models.unet_tf import BN_EPSILON, BN_MOMENTUM, AdamTF, UNetTF, make_train_step


def keras_unet(num_classes, base_filters):
    """The Keras twin of `UNetTF`: same layers, same shapes, same parameter count."""

    def double_conv(x, filters, name):
        for part in ("a", "b"):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              name=f"{name}_conv_{part}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn_{part}")(x)
            x = layers.ReLU(name=f"{name}_relu_{part}")(x)
        return x

    def up_conv(x, filters, name):
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", kernel_initializer="he_normal",
                                      name=name)(x)

    b = base_filters
    inputs = keras.Input((None, None, 3), name="image")
    e1 = double_conv(inputs, b, "enc1")  # (N, H, W, b)
    e2 = double_conv(layers.MaxPooling2D(2)(e1), 2 * b, "enc2")  # (N, H/2, W/2, 2b)
    e3 = double_conv(layers.MaxPooling2D(2)(e2), 4 * b, "enc3")  # (N, H/4, W/4, 4b)
    e4 = double_conv(layers.MaxPooling2D(2)(e3), 8 * b, "enc4")  # (N, H/8, W/8, 8b)
    x = double_conv(layers.MaxPooling2D(2)(e4), 16 * b, "bottleneck")  # (N, H/16, W/16, 16b)
    x = double_conv(layers.Concatenate()([e4, up_conv(x, 8 * b, "up4")]), 8 * b, "dec4")  # (N, H/8, W/8, 8b)
    x = double_conv(layers.Concatenate()([e3, up_conv(x, 4 * b, "up3")]), 4 * b, "dec3")  # (N, H/4, W/4, 4b)
    x = double_conv(layers.Concatenate()([e2, up_conv(x, 2 * b, "up2")]), 2 * b, "dec2")  # (N, H/2, W/2, 2b)
    x = double_conv(layers.Concatenate()([e1, up_conv(x, b, "up1")]), b, "dec1")  # (N, H, W, b)
    outputs = layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name="head")(x)  # (N, H, W, C)
    return keras.Model(inputs, outputs, name="unet_keras")


def masked_ce(masks, logits):
    """Mean softmax cross-entropy over pixels whose label is not 255."""
    valid = masks != 255
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(valid, masks, 0), logits)
    weights = tf.cast(valid, tf.float32)
    return tf.reduce_sum(ce * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


class MaskedCE(keras.losses.Loss):
    """`masked_ce` for model.compile (the bench never saves the model, so no registration)."""

    def call(self, y_true, y_pred):
        return masked_ce(tf.cast(y_true, tf.int32), y_pred)


def keras_train_step(model, optimizer):
    @tf.function
    def train_step(images, masks):
        with tf.GradientTape() as tape:
            loss = masked_ce(masks, model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return train_step


def time_steps(step, warmup, steps):
    """Median seconds per step and the losses, after `warmup` untimed steps."""
    times, losses = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = float(step())  # float() waits for the step to finish
        if i >= warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss)
    return statistics.median(times), losses


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if any(s <= 0 or s % 16 for s in args.image_size):
        raise UserError(f"--image-size must be two positive multiples of 16, got {args.image_size}")
    for flag in ("batch_size", "base_filters", "num_classes", "steps"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv=None):
    args = parse_args(argv)
    height, width = args.image_size
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((args.batch_size, height, width, 3), dtype=np.float32))
    masks = tf.constant(rng.integers(0, args.num_classes, (args.batch_size, height, width)).astype(np.int32))
    lr = tf.constant(args.learning_rate, tf.float32)

    raw = UNetTF(args.num_classes, base_filters=args.base_filters)
    raw_step = make_train_step(raw, masked_ce, AdamTF(raw.trainable_variables))
    keras.utils.set_random_seed(0)
    twin = keras_unet(args.num_classes, args.base_filters)
    twin_step = keras_train_step(twin, keras.optimizers.Adam(args.learning_rate))
    fit_twin = keras_unet(args.num_classes, args.base_filters)
    fit_twin.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=MaskedCE(), jit_compile=False)

    print(f"images {args.batch_size}x{height}x{width}x3, base_filters {args.base_filters}, "
          f"{args.num_classes} classes, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} intra-op threads")
    print(f"parameters  raw: {count(raw.trainable_variables):,} trainable / {count(raw.variables):,} total"
          f"   keras: {count(twin.trainable_weights):,} trainable / {twin.count_params():,} total")
    assert count(raw.variables) == twin.count_params(), "the two U-Nets differ"

    results = {
        "raw": time_steps(lambda: raw_step(images, masks, lr), args.warmup, args.steps),
        "keras": time_steps(lambda: twin_step(images, masks), args.warmup, args.steps),
        "keras-fit": time_steps(lambda: fit_twin.train_on_batch(images, masks), args.warmup, args.steps),
    }
    for name, (median, losses) in results.items():
        print(f"{name:10s} median step {median * 1000:8.1f} ms   loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    raw_time = results["raw"][0]
    print(f"ratio raw/keras     {raw_time / results['keras'][0]:.2f}")
    print(f"ratio raw/keras-fit {raw_time / results['keras-fit'][0]:.2f}")
    print(machine.describe())


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
