"""Will it fit in memory? One estimate for training and inference, checked before the work starts.

    memory.check_training_size("mobilenetv2_pix2pix", batch_size=8, image_size=(352, 480))
    memory.check_inference_size(4000, 6000, "mobilenetv2_pix2pix")     # or a kind: "tflite", "savedmodel"

A step's memory grows with the pixels it sees, so the estimate is

    bytes = FIXED + BYTES_PER_PIXEL[model] * pixels,   pixels = batch * H * W (H, W rounded up to 32)

with the slopes measured on CPU in float32 (the largest case: mixed precision uses less) by
`python -m segkit.memory` (it prints this table; see `measure`): the growth of the peak resident
memory (ru_maxrss) of a fresh process over one training step (model.train_on_batch with the run's loss,
metrics and AdamW; a GradientTape step for unet_tf) or one forward pass (model(x, training=False)), at
two sizes, after a warm-up step at 64x64; BYTES_PER_PIXEL is (growth at the large size - growth at the
small size) / (difference in pixels), rounded up, and FIXED covers the rest (TensorFlow's buffers, the
weights). The estimate is compared with the memory the system can still give (MemAvailable in
/proc/meminfo, and a cgroup limit if one is lower); a size that needs more is refused in one line that
says what to do (a smaller --image-size or --batch-size; --window tiles or --image-size for inference).

An unmeasured model name (or a kind: "keras", "savedmodel", "tflite") gets the largest slope of the
table. The check looks at main memory only: with a GPU, training
and inference run out of GPU memory instead, which TensorFlow reports itself. SEGKIT_MEMORY_CHECK=off
turns the check off (when the estimate is wrong for a machine).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from errors import UserError

GB = 1e9
MULTIPLE = 32
# Bytes per pixel of a training step (batch * H * W) and of a forward pass (H * W), float32 on CPU,
# measured by `python -m segkit.memory` on 2026-11-29 (TensorFlow 2.21, Keras 3, 2-core x86-64 with AVX-512;
# batch 2 at 256x256 and 512x512 for training, batch 1 at 512x512 and 1024x1024 for inference; each model
# at its default options, 11 classes; a repeated run differs by up to 10%). Under mixed_bfloat16
# mobilenetv2_pix2pix took 1900 and 1000.
TRAIN_BYTES_PER_PIXEL = {
    "ddrnet": 600,
    "deeplabv3plus": 1000,
    "mobilenetv2_pix2pix": 2300,
    "mobilenetv3_lraspp": 1350,
    "resnet34_unet": 2000,
    "segformer": 2800,
    "unet_tf": 5800,
    "vgg16_unet": 3550,
}
INFER_BYTES_PER_PIXEL = {
    "ddrnet": 750,
    "deeplabv3plus": 1000,
    "mobilenetv2_pix2pix": 2100,
    "mobilenetv3_lraspp": 1200,
    "resnet34_unet": 1650,
    "segformer": 1050,
    "unet_tf": 1450,
    "vgg16_unet": 2650,
}
# Not measured: export.py writes .tflite files with a fixed input size, which run at that size whatever the
# image (so the check rarely matters); a file with a dynamic size gets the largest inference figure.
TFLITE_BYTES_PER_PIXEL = max(INFER_BYTES_PER_PIXEL.values())
FIXED_BYTES = 0.5 * GB  # on top of what the process holds when it checks: the weights and optimizer, buffers
# Around the model, per pixel of the full image: the image in float32 and its padded copy, the logits (per
# class) and their running sum, the label map and the overlay of predict/evaluate. Worked out from the
# arrays, and checked: predict.py --window 512 512 on a 6000x4000 photo (11 classes) peaked at 4.7 GB, about
# 145 bytes per pixel over the process at rest; these give 56 + 8 * 11 = 144.
IMAGE_BYTES_PER_PIXEL = 56
LOGIT_BYTES_PER_PIXEL_PER_CLASS = 8


def _kind_key(name: str, table: dict) -> int:
    if name == "tflite":
        return TFLITE_BYTES_PER_PIXEL
    return table.get(name, max(table.values()))


def padded(size: int) -> int:
    return -(-int(size) // MULTIPLE) * MULTIPLE


def training_bytes(model: str, batch_size: int, image_size) -> float:
    """Estimated peak bytes of training `model` on batches of `batch_size` crops of `image_size` (H, W)."""
    h, w = (padded(s) for s in image_size)
    return FIXED_BYTES + _kind_key(model, TRAIN_BYTES_PER_PIXEL) * batch_size * h * w


def inference_bytes(height: int, width: int, model: str, batch: int = 1, num_classes: int = 0,
                    image_pixels: int = 0) -> float:
    """Estimated peak bytes of running `model` (a name or "tflite"/"keras"/"savedmodel") on `batch` images
    of height x width, plus the work around it on an image of `image_pixels` (default: the same size)."""
    pixels = batch * padded(height) * padded(width)
    around = (image_pixels or pixels) * (IMAGE_BYTES_PER_PIXEL + LOGIT_BYTES_PER_PIXEL_PER_CLASS * num_classes)
    return FIXED_BYTES + _kind_key(model, INFER_BYTES_PER_PIXEL) * pixels + around


def _read_int(path) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> float:
    """Memory this process can still take: MemAvailable, or less under a cgroup (container) limit."""
    available = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available == math.inf:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            available = min(available, max(0, limit - usage))
    return available


def _enabled() -> bool:
    return os.environ.get("SEGKIT_MEMORY_CHECK", "on").lower() not in ("off", "0", "false", "no")


def _gb(value: float) -> str:
    return f"{value / GB:.1f} GB"


SUGGESTION_SHARE = 0.8  # sizes suggested in a message leave a fifth of the available memory free


def _fitting_side(need_per_pixel: float, budget: float, aspect: float) -> tuple:
    """The largest (H, W), multiples of 32 with W / H ~ aspect, whose pixels fit `budget`."""
    pixels = max(0.0, budget) / need_per_pixel
    h = max(MULTIPLE, int(math.sqrt(pixels / aspect)) // MULTIPLE * MULTIPLE)
    w = max(MULTIPLE, int(h * aspect) // MULTIPLE * MULTIPLE)
    return h, w


def check_training_size(model: str, batch_size: int, image_size) -> None:
    """A UserError, before training starts, when a step of `batch_size` crops of `image_size` would need
    more memory than is available; it names the largest batch size, or image size, that fits."""
    if not _enabled():
        return
    need, available = training_bytes(model, batch_size, image_size), available_bytes()
    if need <= available:
        return
    per_pixel = _kind_key(model, TRAIN_BYTES_PER_PIXEL)
    h, w = (padded(s) for s in image_size)
    budget = SUGGESTION_SHARE * available - FIXED_BYTES
    fits = int(budget // (per_pixel * h * w))
    if fits >= 1:
        advice = f"use --batch-size {fits} or less, or a smaller --image-size"
    else:
        fh, fw = _fitting_side(per_pixel, budget, w / h)
        advice = f"use a smaller --image-size, e.g. --image-size {fh} {fw} with --batch-size 1"
    raise UserError(f"--image-size {image_size[0]} {image_size[1]} with --batch-size {batch_size} needs about "
                    f"{_gb(need)} to train {model} (about {per_pixel} bytes per pixel of a batch), but "
                    f"{_gb(available)} of memory is available; {advice}")


def check_inference_size(height: int, width: int, model_name_or_kind: str, *, batch: int = 1, num_classes: int = 0,
                         image_pixels: int = 0, what: str = "", flag: str = "--image-size") -> None:
    """A UserError, before the work starts, when running `model_name_or_kind` (a model name such as
    "mobilenetv2_pix2pix", or a kind: "tflite", "keras", "savedmodel") on `batch` images of height x width
    would need more memory than is available.

    what: the input, for the message (e.g. "photo.jpg (6000x4000)"); flag: the option that sets the size
    the model runs at ("--image-size" for evaluate/predict, where --window tiles are suggested too;
    "--val-image-size" for validation during training). num_classes / image_pixels: the logits and image
    kept around the model for a full image (see `inference_bytes`).
    """
    if not _enabled():
        return
    need = inference_bytes(height, width, model_name_or_kind, batch, num_classes, image_pixels)
    available = available_bytes()
    if need <= available:
        return
    per_pixel = _kind_key(model_name_or_kind, INFER_BYTES_PER_PIXEL)
    around = IMAGE_BYTES_PER_PIXEL + LOGIT_BYTES_PER_PIXEL_PER_CLASS * num_classes
    # The full image's arrays stay whatever size the model runs at (its logits are resized back to it).
    kept = image_pixels * around
    budget = SUGGESTION_SHARE * available - FIXED_BYTES - kept
    fh, fw = _fitting_side((per_pixel + (0 if image_pixels else around)) * batch, budget, width / max(1, height))
    subject = what or f"{height}x{width}" + (f" (batch {batch})" if batch > 1 else "")
    if budget <= 0:
        advice = f"the image alone needs about {_gb(kept)} at full resolution: downscale or split it first"
    elif flag == "--image-size":
        tile = min(512, fh, fw)
        advice = (f"use --window {tile} {tile} (sliding tiles at full resolution) or --image-size {fh} {fw} "
                  "(resized)")
    else:
        advice = f"use {flag} {fh} {fw}" + (" or a smaller --batch-size" if batch > 1 else "")
    raise UserError(f"running {model_name_or_kind} on {subject} needs about {_gb(need)} (about {per_pixel} bytes "
                    f"per pixel), but {_gb(available)} of memory is available; {advice}")


# ---------------------------------------------------------------------------------------------
# Measuring the table: python -m segkit.memory [MODEL ...]

_CHILD = r'''
import json, os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
mode, name, batch, h, w = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
import numpy as np, keras, tensorflow as tf
import data, losses, models
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
    from segkit.loop_keras import build_and_compile
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
    root = Path(__file__).resolve().parents[1]
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
    import models

    names = (argv if argv is not None else sys.argv[1:]) or sorted(models.MODELS)
    print(f"{'model':<22} {'train B/px':>10} {'infer B/px':>10}")
    for name in names:
        print(f"{name:<22} {measure(name, 'train'):>10} {measure(name, 'infer'):>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
