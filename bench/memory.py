"""Measure the memory slopes kept in each model's record (segkit.catalog): bytes per pixel of a training step
and of a forward pass, as segkit.memory's estimate uses them.

    python -m bench.memory [MODEL ...]

Each figure is the growth of the peak resident memory (ru_maxrss) of a fresh process over one training step
(model.train_on_batch with the run's loss, metrics and AdamW; a GradientTape step for unet_tf) or one forward
pass (model(x, training=False)), at two sizes (TRAIN_SIZES, INFER_SIZES), after a warm-up step at 64x64; the
slope is (growth at the large size - growth at the small size) / (difference in pixels), rounded up to 50.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from segkit import catalog

_CHILD = r'''
import json, os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
mode, name, batch, h, w = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
import numpy as np, keras, tensorflow as tf
from segkit import data, losses, models
from segkit import runtime
from segkit.config import TrainConfig
runtime.set_precision("float32", name)
C = 11
x = np.random.rand(batch, h, w, 3).astype(np.float32)
y = np.random.randint(0, C, (batch, h, w)).astype(np.int32)
small_x, small_y = x[:, :64, :64], y[:, :64, :64]
if name == "unet_tf":
    model = models.build_model(name, C, encoder_weights=None)
    loss_fn, optimizer = losses.get_loss("cce", C, ignore_index=255), keras.optimizers.Adam()
    @tf.function(reduce_retracing=True)
    def step(a, b):
        with tf.GradientTape() as tape:
            loss = loss_fn(b, model(a, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    forward = tf.function(lambda a: model(a, training=False), reduce_retracing=True)
else:
    from segkit.training.loop_keras import build_and_compile
    info = data.DatasetInfo("m", tuple(f"c{i}" for i in range(C)), ((0, 0, 0),) * C)
    model = build_and_compile(TrainConfig(model=name, precision="float32"), info, 10, None)
    step, forward = model.train_on_batch, lambda a: model(a, training=False)
run = (lambda a, b: step(a, b)) if mode == "train" else (lambda a, b: forward(a))
run(small_x, small_y)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
run(x, y); run(x, y)
print(json.dumps({"growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base}))
'''
TRAIN_SIZES, INFER_SIZES = ((2, 256), (2, 512)), ((1, 512), (1, 1024))


def measure(model: str, mode: str) -> int:
    """Bytes per pixel of `model` for `mode` ("train" or "infer"): the slope of the peak memory's growth
    between the two sizes of TRAIN_SIZES / INFER_SIZES, each in a fresh process."""
    root = Path(__file__).resolve().parents[1]  # the repository (bench/ is not installed)
    growth = []
    for batch, side in (TRAIN_SIZES if mode == "train" else INFER_SIZES):
        out = subprocess.run([sys.executable, "-c", _CHILD, mode, model, str(batch), str(side), str(side)],
                             cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
        if out.returncode:
            raise RuntimeError(f"{model} {mode} at {side}: {out.stderr.strip().splitlines()[-1:]}")
        growth.append((batch * side * side, json.loads(out.stdout.strip().splitlines()[-1])["growth"]))
    (p1, g1), (p2, g2) = growth
    return int(math.ceil((g2 - g1) / (p2 - p1) / 50) * 50)


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    names = (argv if argv is not None else sys.argv[1:]) or sorted(catalog.MODELS)
    print(f"{'model':<22} {'train B/px':>10} {'infer B/px':>10}")
    for name in names:
        print(f"{name:<22} {measure(name, 'train'):>10} {measure(name, 'infer'):>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
