"""Predictions for images of any size from any saved model (loaded by segkit.loading).

    predictor = load_predictor("runs/sample-mobilenetv2_pix2pix-...")
    logits = predictor.logits(image)          # (H, W, C) float32 for one float image in [0, 1]
    labels = predictor.labels(image, tta="flip")

Whatever the format, images are padded on the bottom/right to a multiple of 32 (the
models' contract), and the logits are cropped back, so every pixel of the input gets a
prediction at its own resolution. A TFLite file has a fixed input size: images are
resized to it and the logits back, unless the image padded to a multiple of 32 has exactly
that size (then it is padded as above). Class names and colours: see segkit.loading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from segkit.loading import MULTIPLE, LoadedModel, load_model


def pad_image(image: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    h, w = image.shape[:2]
    return np.pad(image, ((0, -h % multiple), (0, -w % multiple), (0, 0)))


class Predictor:
    """Wraps a batch function float32 (N, H, W, 3) -> logits (N, H, W, C)."""

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

    def _forward(self, image: np.ndarray, input_size=None, window=None) -> np.ndarray:
        """Logits at the image's own resolution.

        input_size (H, W): run the model at that size and resize the logits back bilinearly.
        window (H, W): sliding-window inference with tiles of that size overlapping by a third,
        for images larger than the training size; overlapping logits are averaged.
        """
        h, w = image.shape[:2]
        size = input_size or self.fixed_size
        if input_size is None and size is not None and pad_image(image).shape[:2] == tuple(size):
            # The file was exported at this image's padded size: pad and crop as for the other formats.
            return np.asarray(self.batch_fn(pad_image(image)[None])[0][:h, :w], np.float32)
        if size is not None:
            resized = tf.image.resize(image, size, method="bilinear").numpy()
            logits = self.batch_fn(resized[None])[0]
            return tf.image.resize(logits, (h, w), method="bilinear").numpy()
        if window is not None and (h > window[0] or w > window[1]):
            return self._sliding(image, window)
        logits = self.batch_fn(pad_image(image)[None])[0]
        return np.asarray(logits[:h, :w], np.float32)

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

    def logits(self, image, tta: str = "none", scales=(1.0,), input_size=None, window=None) -> np.ndarray:
        """(H, W, C) logits for one float32 image (H, W, 3) in [0, 1].

        tta: "none" or "flip" (average with the horizontally flipped image); `scales`
        adds multi-scale averaging: the image is resized by each factor, predicted, and
        its logits resized back bilinearly before averaging.
        """
        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        total, count = 0.0, 0
        for scale in scales:
            scaled = image
            if scale != 1.0:
                size = (max(MULTIPLE, round(h * scale)), max(MULTIPLE, round(w * scale)))
                scaled = tf.image.resize(image, size, method="bilinear").numpy()
            views = [scaled, scaled[:, ::-1]] if tta == "flip" else [scaled]
            for k, view in enumerate(views):
                out = self._forward(np.ascontiguousarray(view), input_size, window)
                if k == 1:
                    out = out[:, ::-1]
                if scale != 1.0:
                    out = tf.image.resize(out, (h, w), method="bilinear").numpy()
                total, count = total + out, count + 1
        return total / count

    def labels(self, image, **options) -> np.ndarray:
        logits = self.logits(image, **options)
        if logits.shape[-1] == 1:  # binary model: one sigmoid logit
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
