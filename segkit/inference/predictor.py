"""Predictions for images of any size from any saved model (loaded by segkit.inference.loading).

    predictor = load_predictor("runs/sample-mobilenetv2_pix2pix-...")
    logits = predictor.logits(image)          # (H, W, C) float32 for one float image in [0, 1]
    labels = predictor.labels(image, tta="flip")

Keras, SavedModel and ONNX models: images are padded on the bottom/right to a multiple of 32
(the models' contract) and the logits cropped back, so every pixel of the input gets a prediction
at its own resolution. A TFLite file has a fixed input size: an image of that size goes in as it
is; any other is resized the way MediaPipe's ImageSegmenter resizes it on a phone (the whole image
stretched to the file's size, corner to corner, in 8-bit pixels, then the logits resized back with
align-corners bilinear before the argmax), so evaluate.py and predict.py on a .tflite file give what
the mobile runtime gives (mask agreement 1.0 measured against MediaPipe 1.2.3). Class names and
colours: see segkit.inference.loading.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import tensorflow as tf

from segkit import memory
from segkit.errors import UserError
from segkit.inference.loading import MULTIPLE, LoadedModel, load_model


def pad_image(image: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Zeros on the bottom/right up to multiples of `multiple`: one image (H, W, C) or a batch (N, H, W, C)."""
    h, w = image.shape[-3:-1]
    padding = [(0, -h % multiple), (0, -w % multiple), (0, 0)]
    return np.pad(image, [(0, 0)] * (image.ndim - 3) + padding)


# ---------------------------------------------------------------------------------------------
# Fixed-size files: what MediaPipe's ImageSegmenter (CPU, mediapipe 1.2.3) does around the model,
# measured bit-exact with probe models that return their input and known outputs.


@functools.lru_cache(maxsize=16)
def _warp_axis(n_out: int, n_in: int):
    """Along one axis of OpenCV's fixed-point warp (src = dst * in / out): the two source indices of each
    output index and their integer weights in 1/32 (32 - f, f), f the source coordinate's 1/32 fraction."""
    q = np.round(np.arange(n_out) * (n_in / n_out) * 32).astype(np.int64)
    i0, fraction = q >> 5, q & 31
    return (np.minimum(i0, n_in - 1), np.minimum(i0 + 1, n_in - 1), (32 - fraction).astype(np.int16),
            fraction.astype(np.int16))


def resize_image_like_mediapipe(pixels: np.ndarray, size) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3) as MediaPipe's ImageToTensorCalculator makes the model input:
    the whole image stretched (no letterbox), bilinear with corners mapped to corners and no half-pixel
    offset, source coordinates rounded to 1/32 pixel, weights in 1/32768, rounded half up, edges repeated
    (cv2.warpPerspective).

    The 2-D weight of a corner, round(wy * wx * 32768) with wy = a / 32 and wx = b / 32, is exactly
    a * b * 32, so the weighted sum factors into two 1-D passes in integers, with the same result bit for
    bit; the pass that shrinks the image more goes first."""
    h, w = size
    if pixels.shape[:2] == (h, w):
        return pixels
    y0, y1, wy0, wy1 = _warp_axis(h, pixels.shape[0])
    x0, x1, wx0, wx1 = _warp_axis(w, pixels.shape[1])
    wy0, wy1, wx0, wx1 = wy0[:, None, None], wy1[:, None, None], wx0[None, :, None], wx1[None, :, None]
    if pixels.shape[0] > h:  # rows first; int16 holds a 1-D sum (at most 32 x 255), int32 the 2-D one
        rows = pixels[y0].astype(np.int16) * wy0 + pixels[y1].astype(np.int16) * wy1
        total = rows[:, x0].astype(np.int32) * wx0 + rows[:, x1].astype(np.int32) * wx1
    else:
        columns = pixels[:, x0].astype(np.int16) * wx0 + pixels[:, x1].astype(np.int16) * wx1
        total = columns[y0].astype(np.int32) * wy0 + columns[y1].astype(np.int32) * wy1
    return ((total * 32 + (1 << 14)) >> 15).astype(np.uint8)


def resize_logits_like_mediapipe(logits: np.ndarray, size) -> np.ndarray:
    """(h, w, C) or (N, h, w, C) -> the same at (H, W), as MediaPipe resizes the output before its category
    mask's argmax: bilinear with align_corners (scale (in - 1) / (out - 1))."""
    batch = logits if logits.ndim == 4 else logits[None]
    if batch.shape[1:3] == tuple(size):
        return logits
    out = tf.raw_ops.ResizeBilinear(images=tf.constant(batch, tf.float32), size=size, align_corners=True,
                                    half_pixel_centers=False).numpy()
    return out if logits.ndim == 4 else out[0]


def as_float_images(images, what: str = "images") -> np.ndarray:
    """float32 (N, H, W, 3) in [0, 1] from uint8 pixels (scaled by 1/255) or float values in [0, 1]; anything
    else (other integer types, floats outside [0, 1] such as 0-255 values in a float array, NaN, another shape)
    is refused in one line rather than misread."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{what} must be RGB, (H, W, 3) or (N, H, W, 3); got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    if not np.issubdtype(images.dtype, np.floating):
        raise UserError(f"{what} must be uint8 (0-255) or float in [0, 1]; got {images.dtype}")
    images = images.astype(np.float32, copy=False)
    if images.size:
        low, high = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise UserError(f"{what} hold NaN or infinite values")
        if low < -1e-3 or high > 1 + 1e-3:
            raise UserError(f"float {what} must be in [0, 1], these range from {low:g} to {high:g}"
                            + ("; pass them as uint8, or divide by 255" if high > 1.5 else ""))
    return images


class Predictor:
    """Wraps a batch function float32 (N, H, W, 3) -> logits (N, H, W, C). Its logits/labels methods take
    uint8 images (0-255) or float images in [0, 1] (as_float_images)."""

    def __init__(self, batch_fn, info: dict, kind: str, path: Path, fixed_size=None):
        self.batch_fn = batch_fn
        self.info = info
        self.kind = kind
        self.path = path
        self.fixed_size = fixed_size  # (H, W) for a TFLite model with a static input shape

    @property
    def class_names(self):
        return self.info["class_names"]

    @property
    def colors(self):
        return self.info["colors"]

    @property
    def num_classes(self):
        return len(self.info["class_names"])

    def _forward(self, batch: np.ndarray, input_size=None, window=None) -> np.ndarray:
        """Logits (N, H, W, C) at the images' own resolution for same-sized images (N, H, W, 3).

        input_size (H, W): run the model at that size and resize the logits back bilinearly.
        window (H, W): sliding-window inference with tiles of that size overlapping by a third,
        for images larger than the training size; overlapping logits are averaged.
        """
        h, w = batch.shape[1:3]
        if self.kind == "tflite" and self.fixed_size is not None:
            return self._forward_like_mediapipe(batch)
        size = input_size or self.fixed_size
        if size is not None:
            resized = tf.image.resize(batch, size, method="bilinear").numpy()
            return tf.image.resize(self.batch_fn(resized), (h, w), method="bilinear").numpy()
        if window is not None and (h > window[0] or w > window[1]):
            return np.stack([self._sliding(image, window) for image in batch])
        logits = self.batch_fn(pad_image(batch))
        return np.asarray(logits[:, :h, :w], np.float32)

    def _pixels_like_mediapipe(self, batch: np.ndarray) -> np.ndarray:
        """The fixed-size file's uint8 input for float images (N, H, W, 3) in [0, 1]."""
        size = tuple(self.fixed_size)
        pixels = np.round(np.clip(batch, 0, 1) * 255).astype(np.uint8)
        if pixels.shape[1:3] == size:
            return pixels
        return np.stack([resize_image_like_mediapipe(image, size) for image in pixels])

    def _forward_like_mediapipe(self, batch: np.ndarray) -> np.ndarray:
        logits = np.asarray(self.batch_fn(self._pixels_like_mediapipe(batch)), np.float32)
        return resize_logits_like_mediapipe(logits, batch.shape[1:3])

    def _lean_labels(self, images: np.ndarray, options) -> np.ndarray | None:
        """Class indices straight from a fixed-size TFLite file's own output, when an image of its size is
        predicted in one view: the argmax of its quantized logits (tflite_runtime's `labels`) is the class
        the float logits give, without making them. None where the general path is needed."""
        plain = options.get("tta", "none") == "none" and tuple(options.get("scales") or (1.0,)) == (1.0,)
        if not (plain and self.kind == "tflite" and self.fixed_size is not None
                and images.shape[1:3] == tuple(self.fixed_size) and hasattr(self.batch_fn, "labels")
                and getattr(self.batch_fn, "output_size", None) == tuple(self.fixed_size)):
            return None  # another size, several views, or a file whose logits are at the model's stride
        return self.batch_fn.labels(self._pixels_like_mediapipe(images))

    def _sliding(self, image: np.ndarray, window) -> np.ndarray:
        h, w = image.shape[:2]
        th, tw = window
        padded = np.pad(image, ((0, max(0, th - h)), (0, max(0, tw - w)), (0, 0)))
        ph, pw = padded.shape[:2]

        def starts(length, tile):
            stride = max(1, tile * 2 // 3)
            points = list(range(0, max(1, length - tile + 1), stride))
            return points if points[-1] == length - tile else points + [length - tile]

        total, count = None, np.zeros((ph, pw, 1), np.float32)
        for top in starts(ph, th):
            for left in starts(pw, tw):
                out = self.batch_fn(padded[None, top:top + th, left:left + tw])[0]
                if total is None:
                    total = np.zeros((ph, pw, out.shape[-1]), np.float32)
                total[top:top + th, left:left + tw] += out
                count[top:top + th, left:left + tw] += 1
        return (total / count)[:h, :w]

    def run_sizes(self, height: int, width: int, options) -> tuple:
        """((h, w) the model runs at, pixels of the largest full-size view) for an image of height x width
        under logits_batch's options: --scales resize the image, --image-size (or a fixed-size model)
        resizes it to that size, --window runs tiles of that size over a larger image, else the image itself."""
        run, full = (0, 0), 0
        for scale in options.get("scales") or (1.0,):
            h, w = (height, width) if scale == 1.0 else (max(32, round(height * scale)), max(32, round(width * scale)))
            size = options.get("input_size") or self.fixed_size
            window = options.get("window")
            if size:
                at = tuple(size)
            elif window and (h > window[0] or w > window[1]):
                at = tuple(window)
            else:
                at = (h, w)
            run = max(run, at, key=lambda hw: hw[0] * hw[1])
            full = max(full, h * w)
        return run, full

    def check_memory(self, height: int, width: int, options, what: str = "", batch: int = 1) -> None:
        """A UserError (segkit.memory) when predicting `batch` images of height x width under `options` would
        not fit in memory, suggesting --window or --image-size; `what` names the input in the message."""
        model = "tflite" if self.kind == "tflite" else (self.info.get("config") or {}).get("model") or self.kind
        (h, w), full = self.run_sizes(height, width, options)
        run_at = "" if (h, w) == (height, width) else f", run at {w}x{h}"
        memory.check_inference_size(h, w, model, batch=batch, num_classes=self.num_classes, image_pixels=full,
                                    what=f"{what} ({width}x{height}{run_at})" if what else "")

    def logits_batch(self, images, tta: str = "none", scales=(1.0,), input_size=None, window=None) -> np.ndarray:
        """(N, H, W, C) logits for same-sized float32 images (N, H, W, 3) in [0, 1], in one model call
        per view where the format allows (one per image for TFLite files, which hold batch 1).

        tta: "none" or "flip" (average with the horizontally flipped image); `scales`
        adds multi-scale averaging: the images are resized by each factor, predicted, and
        their logits resized back bilinearly before averaging.
        """
        images = as_float_images(images)
        h, w = images.shape[1:3]
        if tta == "none" and tuple(scales) == (1.0,):  # one view: nothing to average
            return self._forward(np.ascontiguousarray(images), input_size, window)
        total, count = 0.0, 0
        for scale in scales:
            scaled = images
            if scale != 1.0:
                size = (max(MULTIPLE, round(h * scale)), max(MULTIPLE, round(w * scale)))
                scaled = tf.image.resize(images, size, method="bilinear").numpy()
            views = [scaled, scaled[:, :, ::-1]] if tta == "flip" else [scaled]
            for k, view in enumerate(views):
                out = self._forward(np.ascontiguousarray(view), input_size, window)
                if k == 1:
                    out = out[:, :, ::-1]
                if scale != 1.0:
                    out = tf.image.resize(out, (h, w), method="bilinear").numpy()
                total, count = total + out, count + 1
        return total / count

    def logits(self, image, **options) -> np.ndarray:
        """(H, W, C) logits for one image (H, W, 3), uint8 or float in [0, 1]; options as logits_batch."""
        return self.logits_batch(np.asarray(image)[None], **options)[0]

    def labels_batch(self, images, **options) -> np.ndarray:
        """(N, H, W) class indices for same-sized images (N, H, W, 3), uint8 or float in [0, 1]; options as
        logits_batch."""
        images = as_float_images(images)
        lean = self._lean_labels(images, options)
        return lean if lean is not None else to_labels(self.logits_batch(images, **options))

    def labels(self, image, **options) -> np.ndarray:
        """(H, W) class indices for one image (H, W, 3), uint8 or float in [0, 1]; options as logits_batch."""
        return self.labels_batch(np.asarray(image)[None], **options)[0]


def to_labels(logits: np.ndarray) -> np.ndarray:
    """Class indices from logits (..., C): argmax, or logit > 0 for a one-logit binary model."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(np.int32)
    return np.argmax(logits, axis=-1).astype(np.int32)


def load_predictor(path, num_threads: int | None = None) -> Predictor:
    """A Predictor for a run folder, .keras file, SavedModel folder or .tflite file."""
    return predictor_for(load_model(path, num_threads=num_threads))


def predictor_for(model: LoadedModel) -> Predictor:
    fixed = model.fixed_size
    if fixed is None and (model.info.get("config") or {}).get("val_image_size"):
        # A run validated at a fixed size (--val-image-size) was selected at that size: predict at it too
        # (images resized to it, logits resized back); --image-size in evaluate/predict overrides it.
        fixed = tuple(model.info["config"]["val_image_size"])
    return Predictor(model.forward, model.info, model.kind, model.path, fixed_size=fixed)
