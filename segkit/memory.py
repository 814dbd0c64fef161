"""Will it fit in memory? One estimate for training and inference, checked before the work starts.

    memory.check_training_size("mobilenetv2_pix2pix", batch_size=8, image_size=(352, 480))
    memory.check_inference_size(4000, 6000, "mobilenetv2_pix2pix")     # or a kind: "tflite", "savedmodel"

A step's memory grows with the pixels it sees, so the estimate is

    bytes = FIXED + BYTES_PER_PIXEL[model] * pixels,   pixels = batch * H * W (H, W rounded up to 32)

with the slopes kept in each model's record (segkit.catalog), measured on CPU in float32 (the largest case:
mixed precision uses less) by `python -m bench.memory` (it prints the table; see `measure` there): the growth of the peak resident
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

import math
import os
from pathlib import Path

from segkit import catalog
from segkit.errors import UserError

GB = 1e9
MULTIPLE = catalog.MULTIPLE
# Not measured: export.py writes .tflite files with a fixed input size, which run at that size whatever the
# image (so the check rarely matters); a file with a dynamic size gets the largest inference figure.
TFLITE_BYTES_PER_PIXEL = max(spec.infer_bytes_per_pixel for spec in catalog.MODELS.values())
FIXED_BYTES = 0.5 * GB  # on top of what the process holds when it checks: the weights and optimizer, buffers
# Around the model, per pixel of the full image: the image in float32 and its padded copy, the logits (per
# class) and their running sum, the label map and the overlay of predict/evaluate. Worked out from the
# arrays, and checked: predict.py --window 512 512 on a 6000x4000 photo (11 classes) peaked at 4.7 GB, about
# 145 bytes per pixel over the process at rest; these give 56 + 8 * 11 = 144.
IMAGE_BYTES_PER_PIXEL = 56
LOGIT_BYTES_PER_PIXEL_PER_CLASS = 8


def _per_pixel(name: str, slope: str) -> int:
    """The model's `slope` ("train_bytes_per_pixel" or "infer_bytes_per_pixel") from segkit.catalog; a kind
    ("tflite", "keras", "savedmodel") or an unknown name gets the largest of the table."""
    if name == "tflite":
        return TFLITE_BYTES_PER_PIXEL
    spec = catalog.MODELS.get(name)
    return getattr(spec, slope) if spec else max(getattr(s, slope) for s in catalog.MODELS.values())


def padded(size: int) -> int:
    return -(-int(size) // MULTIPLE) * MULTIPLE


def training_bytes(model: str, batch_size: int, image_size) -> float:
    """Estimated peak bytes of training `model` on batches of `batch_size` crops of `image_size` (H, W)."""
    h, w = (padded(s) for s in image_size)
    return FIXED_BYTES + _per_pixel(model, "train_bytes_per_pixel") * batch_size * h * w


def inference_bytes(height: int, width: int, model: str, batch: int = 1, num_classes: int = 0,
                    image_pixels: int = 0) -> float:
    """Estimated peak bytes of running `model` (a name or "tflite"/"keras"/"savedmodel") on `batch` images
    of height x width, plus the work around it on an image of `image_pixels` (default: the same size)."""
    pixels = batch * padded(height) * padded(width)
    around = (image_pixels or pixels) * (IMAGE_BYTES_PER_PIXEL + LOGIT_BYTES_PER_PIXEL_PER_CLASS * num_classes)
    return FIXED_BYTES + _per_pixel(model, "infer_bytes_per_pixel") * pixels + around


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
    per_pixel = _per_pixel(model, "train_bytes_per_pixel")
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
                         image_pixels: int = 0, what: str = "", flag: str = "--image-size",
                         tiles: bool = True) -> None:
    """A UserError, before the work starts, when running `model_name_or_kind` (a model name such as
    "mobilenetv2_pix2pix", or a kind: "tflite", "keras", "savedmodel") on `batch` images of height x width
    would need more memory than is available.

    what: the input, for the message (e.g. "photo.jpg (6000x4000)"); flag: the option that sets the size
    the model runs at ("--image-size" for evaluate/predict, where --window tiles are suggested too;
    "--val-image-size" for validation during training). num_classes / image_pixels: the logits and image
    kept around the model for a full image (see `inference_bytes`); tiles: whether --window is on offer.
    """
    if not _enabled():
        return
    need = inference_bytes(height, width, model_name_or_kind, batch, num_classes, image_pixels)
    available = available_bytes()
    if need <= available:
        return
    per_pixel = _per_pixel(model_name_or_kind, "infer_bytes_per_pixel")
    around = IMAGE_BYTES_PER_PIXEL + LOGIT_BYTES_PER_PIXEL_PER_CLASS * num_classes
    # The full image's arrays stay whatever size the model runs at (its logits are resized back to it).
    kept = image_pixels * around
    budget = SUGGESTION_SHARE * available - FIXED_BYTES - kept
    fh, fw = _fitting_side((per_pixel + (0 if image_pixels else around)) * batch, budget, width / max(1, height))
    subject = what or f"{height}x{width}" + (f" (batch {batch})" if batch > 1 else "")
    if budget <= 0:
        advice = f"the image alone needs about {_gb(kept)} at full resolution: downscale or split it first"
    elif flag == "--image-size" and tiles:
        tile = min(512, fh, fw)
        advice = (f"use --window {tile} {tile} (sliding tiles at full resolution) or --image-size {fh} {fw} "
                  "(resized)")
    else:
        advice = f"use {flag} {fh} {fw}" + (" or a smaller --batch-size" if batch > 1 else "")
    raise UserError(f"running {model_name_or_kind} on {subject} needs about {_gb(need)} (about {per_pixel} bytes "
                    f"per pixel), but {_gb(available)} of memory is available; {advice}")
