"""ONNX export: the model's inference function (training=False, float32) converted by tf2onnx, for onnxruntime
and the runtimes that read ONNX.

    input  `images`  float32 (batch, height, width, 3) in [0, 1], NHWC; height and width multiples of 32
    output `logits`  float32 (batch, height, width, classes)

`batch`, `height` and `width` are symbolic dimensions; the class names and colours travel inside the file
(`metadata_props`: `class_names`, `colors`, JSON lists) as well as in the sidecar. segkit.inference.predictor
pads and crops images around it as for a .keras file.

The function is traced here with training=False rather than through Keras' model.export: traced there, layers
that keras-hub calls without a `training` argument (DeepLabV3+'s pyramid pooling) ran in training mode, with
batch statistics, and the file disagreed with the model (mask agreement 0.34 after training).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from segkit.errors import UserError
from segkit.exporters.source import Source

OPSET = 17
INPUT, OUTPUT = "images", "logits"
SKIPPED_OPTIMIZERS = ("reshape_optimizer",)


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def _symbolic(value, names) -> None:
    for dim, name in zip(value.type.tensor_type.shape.dim, names):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name


def write_onnx(source: Source, path: Path, info: dict | None = None) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT)
    concrete = tf.function(lambda images: source.forward(images), input_signature=[spec]).get_concrete_function()
    # Frozen: variables and captured tensors (e.g. a normalisation layer's constants) become constants of the
    # graph, rather than extra inputs of the file.
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    from tf2onnx import optimizer

    kept = optimizer._optimizers
    # tf2onnx's reshape optimizer turns SegFormer's head split (a Reshape after a flattening MatMul, then a
    # Transpose that moves a dimension of 1) into one Reshape whose 0 ("copy this dimension") copies the wrong
    # one: the file then fails in onnxruntime. onnxruntime simplifies the graph itself when it loads it.
    optimizer._optimizers = type(kept)((k, v) for k, v in kept.items() if k not in SKIPPED_OPTIMIZERS)
    with warnings.catch_warnings():  # tf2onnx's numpy-2 deprecation notices
        warnings.simplefilter("ignore")
        try:
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=OPSET)
        except Exception as exc:  # tf2onnx raises many kinds for an op it cannot convert
            raise UserError(f"the ONNX converter failed on {source.path}: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
        finally:
            optimizer._optimizers = kept
    graph = proto.graph
    _rename(graph, graph.input[0].name, INPUT)
    _rename(graph, graph.output[0].name, OUTPUT)
    _symbolic(graph.input[0], ("batch", "height", "width", None))
    _symbolic(graph.output[0], ("batch", "height", "width", None))
    proto.producer_name = "segkit"
    proto.doc_string = "Semantic segmentation: float32 RGB images in [0, 1] (NHWC) in, per-class logits out."
    if info and "class_names" in info:
        for key in ("class_names", "colors"):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(info[key])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

