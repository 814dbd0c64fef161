"""Running a .tflite file as a batch function, float or quantized input alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from errors import UserError


def make_interpreter(path: Path, num_threads: int | None = None):
    """TensorFlow's bundled TFLite interpreter (see README: it ran faster here than ai-edge-litert)."""
    import tensorflow as tf

    try:
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
    except ValueError as exc:
        raise UserError(f"cannot load TFLite model {path}: {str(exc).splitlines()[0]}") from None
    interpreter.allocate_tensors()
    return interpreter


def tflite_batch_fn(path: Path, num_threads: int | None = None):
    """(fn, fixed_size): fn maps float32 (N, H, W, 3) in [0, 1] to float32 logits; fixed_size is
    the (H, W) the file was exported with, or None when its input shape is dynamic."""
    interpreter = make_interpreter(path, num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    shape = inp["shape_signature"] if len(inp.get("shape_signature", [])) else inp["shape"]
    fixed = None if (shape[1] <= 0 or shape[2] <= 0) else (int(shape[1]), int(shape[2]))

    def run(batch):
        batch = np.asarray(batch, np.float32)
        results = []
        for image in batch:  # TFLite models here are exported with batch 1
            x = image[None]
            if fixed is None:
                interpreter.resize_tensor_input(inp["index"], x.shape)
                interpreter.allocate_tensors()
            if inp["dtype"] in (np.uint8, np.int8):
                scale, zero = inp["quantization"]
                if inp["dtype"] == np.uint8 and scale > 0:
                    x = np.clip(np.round(x / scale + zero), 0, 255).astype(np.uint8)
                else:
                    x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
            interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
            interpreter.invoke()
            y = interpreter.get_tensor(out["index"])
            if out["dtype"] in (np.uint8, np.int8):
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            results.append(y[0].astype(np.float32))
        return np.stack(results)

    return run, fixed
