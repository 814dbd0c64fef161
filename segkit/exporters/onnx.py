"""ONNX export: Keras' own `model.export(path, format="onnx")` (tf2onnx underneath), float32 NHWC images
in [0, 1] of any height and width (dynamic axes) -> float32 logits, for onnxruntime and the runtimes
that read ONNX. Like the other formats the image's height and width should be multiples of 32;
segkit.inference.predictor pads and crops around it as for a .keras file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from segkit.errors import UserError
from segkit.exporters.source import Source


def write_onnx(source: Source, path: Path) -> None:
    import keras

    if source.model is None:
        raise UserError(f"--format onnx takes a Keras model; {source.path} is a {source.kind} "
                        "(unet_tf exports to savedmodel and tflite)")
    spec = keras.InputSpec(shape=(None, None, None, 3), dtype="float32")
    with warnings.catch_warnings():  # tf2onnx's numpy-2 deprecation notices
        warnings.simplefilter("ignore")
        try:
            source.model.export(str(path), format="onnx", verbose=False, input_signature=[spec])
        except Exception as exc:  # tf2onnx raises many kinds for an op it cannot convert
            raise UserError(f"the ONNX converter failed on {source.path}: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
