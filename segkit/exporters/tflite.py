"""TFLite conversion: batch 1, a fixed (H, W), from the frozen forward function.

Every file takes uint8 RGB pixels (1, H, W, 3), the raw values of a camera frame, so mobile runtimes
(MediaPipe's ImageSegmenter, LiteRT apps) run it with no normalization settings:

    quantize "none"     float32 weights and activations; the graph divides the pixels by 255;
             "fp16"     float16 weights (half the file), float32 compute;
             "dynamic"  int8 weights, float32 activations (dynamic-range quantization, the TF Model
                        Garden's "default"): a quarter of the file, no calibration;
             "int8"     full-integer: int8 weights and activations calibrated on images of the run's
                        TRAINING split resized to (H, W); the uint8 input has scale 1/255 and zero point 0
                        (the raw pixel values) and the output logits are uint8 (dequantized by readers);
                        the conversions from and to uint8 are rewritten to run where they are cheap
                        (segkit.exporters.tflite_graph).

(H, W) need not be multiples of 32: the graph pads the image on the bottom/right with zeros to the
next multiple and crops the logits back, as segkit.inference.predictor does for the other formats, so a file
exported at the camera's frame size (CamVid: 360x480) runs frames without any resizing.
segkit.inference.predictor resizes other image sizes the way MediaPipe does.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import tensorflow as tf

from segkit.errors import UserError
from segkit.exporters.metadata import append_labels, strip_associated_files
from segkit.exporters.source import Source
from segkit.exporters.tflite_graph import rewrite_int8
from segkit.inference.loading import MULTIPLE
from segkit.inference.tflite_runtime import read_labels


def padded_forward(source: Source, size):
    """float32 (1, H, W, 3) in [0, 1] -> logits (1, H, W, C) for any (H, W): padded on the bottom/right to
    a multiple of 32 (zeros) for the model, the logits cropped back."""
    h, w = size
    pad_h, pad_w = -h % MULTIPLE, -w % MULTIPLE

    def forward(x):
        if pad_h or pad_w:
            x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        return tf.cast(source.forward(x), tf.float32)[:, :h, :w, :]

    return forward


def frozen_function(source: Source, size, quantize: str):
    """The forward pass at batch 1 and `size` as a concrete function with the weights as constants.

    Freezing first (rather than handing the converter the Keras model or a function that reads
    variables) gives one path for Keras and raw-TF models alike, and the converter folds batch
    norm into the convolutions; unfrozen variables would stay VAR_HANDLE/READ_VARIABLE ops.
    int8 files trace a float input that the converter turns into uint8 with scale 1/255; the others
    take uint8 pixels and divide by 255 themselves."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = padded_forward(source, size)
    if quantize == "int8":
        spec = tf.TensorSpec([1, *size, 3], tf.float32, name="image")
        function = tf.function(lambda image: {"logits": forward(image)})
    else:
        spec = tf.TensorSpec([1, *size, 3], tf.uint8, name="image")
        function = tf.function(lambda image: {"logits": forward(tf.cast(image, tf.float32) / 255.0)})
    return convert_variables_to_constants_v2(function.get_concrete_function(spec))


def to_8bit_levels(image) -> np.ndarray:
    """float32 [0, 1] pixels rounded to the 256 levels a uint8 image holds (SavedModel and int8 inputs)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.float32) / 255


def calibration_images(ds, size, count):
    """`count` images spread over the dataset `ds` (the training split), resized to `size` as
    segkit.inference.predictor resizes them, rounded to 8-bit levels, each (1, H, W, 3) float32 in [0, 1]."""
    total = int(ds.cardinality())
    every = max(1, total // count) if total > 0 else 1
    images = []
    for image, _ in ds.shard(every, 0).take(count).as_numpy_iterator():
        resized = tf.image.resize(image, size, method="bilinear").numpy()
        images.append(to_8bit_levels(resized)[None])
    if not images:
        raise UserError("--quantize int8 needs calibration images but the training split is empty")
    # One black and one white pixel pin the input's calibrated range to exactly [0, 1], so the uint8
    # input gets scale 1/255 and zero point 0: the raw pixel values are the quantized input.
    images[0][0, 0, 0] = 0.0
    images[0][0, 0, 1] = 1.0
    return images


class _DropMessage(logging.Filter):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


def tflite_bytes(source: Source, size, quantize: str, calibration=None) -> bytes:
    """The .tflite file of `source` at batch 1 and `size` (H, W); see the module docstring. An int8 file's
    two uint8 <-> int8 conversions are rewritten (segkit.exporters.tflite_graph): the input's so that XNNPACK
    runs it, the output's to come before the final resize. The same values, 3.2 ms less per 360x480 DDRNet
    frame on the AMD EPYC with AVX512-VNNI."""
    converted = converter_bytes(source, size, quantize, calibration)
    return rewrite_int8(converted) if quantize == "int8" else converted


def rewrite_int8_file(data: bytes) -> bytes:
    """A finished .tflite file (segmenter metadata inside, labels zip appended) with tflite_bytes' rewrites, for
    int8 files exported before export made them; the same bytes when there is nothing to rewrite (a float file, or
    one already rewritten)."""
    graph = strip_associated_files(data)
    rewritten = rewrite_int8(graph)
    if rewritten is graph:
        return data
    labels = read_labels(data)
    return append_labels(rewritten, labels) if labels is not None else rewritten


def converter_bytes(source: Source, size, quantize: str, calibration=None) -> bytes:
    """The TFLite converter's own file for `source`, before tflite_bytes' rewrite.

    The frozen function goes to the converter without a `trackable_obj`: TensorFlow calls that
    the deprecated path and warns, but with one the converter re-saves the model first and took
    6x longer here (11.7 s against 2.0 s for MobileNetV2) for the same file."""
    frozen = frozen_function(source, size, quantize)
    quiet = _DropMessage("consider providing the trackable_obj")
    logging.getLogger("absl").addFilter(quiet)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    finally:
        logging.getLogger("absl").removeFilter(quiet)
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":  # Optimize.DEFAULT without a representative dataset: int8 weights only
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        with warnings.catch_warnings():  # int8: "Statistics for quantized inputs were expected": the
            warnings.simplefilter("ignore")  # representative dataset gives them
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError / RuntimeError with MLIR dumps
        raise UserError(f"the TFLite converter failed on {source.path}: {str(exc).strip().splitlines()[0]}") from None
