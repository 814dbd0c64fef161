"""The parity check of an export: the written file, loaded the way evaluate.py loads it, against the
source model on validation images.

Reported: the largest logit difference, the largest source logit L = max(1, max |logit|) and the mask
agreement (share of pixels with the same argmax). The export fails, and nothing is written, beyond

    keras, savedmodel, onnx, tflite none:  max |d logit| <= 0.001 L  and mask agreement >= 0.999
    tflite fp16:                           max |d logit| <= 0.02 L   and mask agreement >= 0.99
    tflite dynamic:                        max |d logit| <= 0.1 L    and mask agreement >= 0.97
    tflite int8:                           max |d logit| <= 0.25 L   and mask agreement >= 0.90

or when either side gives a non-finite logit. Agreement alone misses gross errors (an int8 file fed
images at half brightness still agreed on 0.915 of the pixels, with logits off by 0.64 L); measured
differences per format are in docs/export.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from segkit.errors import UserError
from segkit.exporters.source import Source
from segkit.exporters.tflite import to_8bit_levels
from segkit import catalog
from segkit.inference.predictor import pad_image

TOLERANCES = catalog.EXPORT_TOLERANCES


@dataclasses.dataclass
class Parity:
    max_difference: float
    max_logit: float
    agreement: float

    def as_dict(self) -> dict:
        return {"max_logit_difference": self.max_difference, "max_logit": self.max_logit,
                "mask_agreement": self.agreement}


def agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Share of pixels where both logit maps give the same label."""
    def labels(x):
        return (x[..., 0] > 0) if x.shape[-1] == 1 else np.argmax(x, axis=-1)

    return float(np.mean(labels(ref_logits) == labels(logits)))


def check_images(ds, count):
    """The first `count` images of `ds` (the validation split), at 8-bit levels."""
    return [to_8bit_levels(image) for image, _ in ds.take(count).as_numpy_iterator()]


def compare(source: Source, exported_fn, images, size=None) -> Parity:
    """The exported batch function against the source on `images`.

    size: the TFLite file's fixed (H, W): both get the image resized to it; else both see the
    image at its own size. The source always sees its input padded to a multiple of 32, the logits
    cropped back.
    A non-finite logit on either side is a UserError: NaN would compare as no difference."""
    worst, largest, agree = 0.0, 0.0, []
    for k, image in enumerate(images):
        x = image if size is None else to_8bit_levels(tf.image.resize(image, size, method="bilinear").numpy())
        h, w = x.shape[:2]
        ref = np.asarray(source.forward(tf.constant(pad_image(x)[None], tf.float32)), np.float32)[0, :h, :w]
        if not np.isfinite(ref).all():
            raise UserError(f"{source.path} gives non-finite logits (NaN or inf) on check image {k}; "
                            "its weights are broken: nothing was exported")
        got = exported_fn(x[None].astype(np.float32))[0]
        if not np.isfinite(got).all():
            raise UserError(f"the exported file gives non-finite logits (NaN or inf) on check image {k}; "
                            "nothing was written")
        worst = max(worst, float(np.max(np.abs(ref - got))))
        largest = max(largest, float(np.max(np.abs(ref))))
        agree.append(agreement(ref, got))
    return Parity(worst, largest, float(np.mean(agree)))


def require(parity: Parity, kind: str, what: str, source_path) -> None:
    """A UserError unless `parity` is within TOLERANCES[kind]."""
    max_diff, min_agreement = TOLERANCES[kind]
    limit = max_diff * max(1.0, parity.max_logit)
    if not parity.max_difference <= limit or not parity.agreement >= min_agreement:
        raise UserError(f"the exported {what} disagrees with {source_path}: max |logit difference| "
                        f"{parity.max_difference:.3g}, mask agreement {parity.agreement:.4f} (tolerance: max |logit "
                        f"difference| <= {limit:.3g} and mask agreement >= {min_agreement}); nothing was written")
