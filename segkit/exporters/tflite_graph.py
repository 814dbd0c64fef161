"""Rewrites of a converted int8 .tflite graph that change where work is done, not what it computes
(`rewrite_int8` applies both; export.py does so for every full-integer file).

`requantize_early`: the converter ends a full-integer segmentation file with

    head conv (int8, H/8 x W/8 x C) -> RESIZE_BILINEAR (int8, H x W x C) -> STRIDED_SLICE -> QUANTIZE (int8 -> uint8)

because `inference_output_type=tf.uint8` appends the QUANTIZE to the graph's output. That QUANTIZE runs on
every pixel of the full-size logits, and XNNPACK does not take an int8 -> uint8 QUANTIZE: TFLite's built-in
kernel does it on one thread. At 360x480x11 it took 2.6-2.8 ms of the DDRNet-tiny file's 12.2 ms `invoke` on
an AMD EPYC with AVX512-VNNI. The rewrite moves it to the start of that tail, where the logits are 64 times
smaller, and runs the resize and the slice on uint8 instead:

    head conv (int8) -> QUANTIZE (int8 -> uint8, H/8 x W/8 x C) -> RESIZE_BILINEAR (uint8) -> STRIDED_SLICE (uint8)

It is taken only where it leaves fewer values to requantize, and only when it cannot change a value's
meaning: every op moved past is RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR or STRIDED_SLICE with the same
quantization on its input and output, each intermediate tensor feeds only the next op, and the QUANTIZE
keeps the scale (it only shifts the zero point, by 128). Shifting every value by a constant commutes with
slicing exactly, and with bilinear interpolation up to the rounding of the interpolated value: through
XNNPACK (how segkit runs int8 files, and MediaPipe on a CPU) the rewritten file gives the converter's file's
values exactly; TFLite's built-in kernels round their int8 and uint8 resizes apart on a few values, by one
level (0.3% of the logits in tests/test_tflite_graph.py).

`input_through_float`: the file's first op converts the uint8 pixels to int8 (QUANTIZE uint8 -> int8, the
same scale 1/255 and zero point -128), another conversion XNNPACK does not take. Done as DEQUANTIZE
(uint8 -> float32) then QUANTIZE (float32 -> int8), both of which it takes, it runs on every thread in
vector code and gives the same int8 pixel for each of the 256 values.

Anything else is left as the converter wrote it.
"""

from __future__ import annotations

import copy

import numpy as np

from tensorflow.lite.python import schema_py_generated as schema

from segkit.inference.tflite_runtime import pack

_OPS = schema.BuiltinOperator
# Ops that move values without computing new ones, so a zero-point shift passes through them.
_PASS_THROUGH = (_OPS.RESIZE_BILINEAR, _OPS.RESIZE_NEAREST_NEIGHBOR, _OPS.STRIDED_SLICE)


def _opcode(tree, op) -> int:
    return _builtin(tree.operatorCodes[op.opcodeIndex])


def _builtin(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)  # small codes live in the deprecated field


def _params(tensor) -> tuple:
    """(scale, zero point) of a per-tensor quantized tensor, or None."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def _tail(tree, graph):
    """(quantize op, [moved ops, last first]) of `graph`'s output tail, or None when the rewrite does not apply."""
    if len(graph.outputs) != 1:
        return None
    producer = {int(t): op for op in graph.operators for t in op.outputs}
    consumers = {}
    for op in graph.operators:
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(op)
    quantize = producer.get(int(graph.outputs[0]))
    if quantize is None or _opcode(tree, quantize) != _OPS.QUANTIZE:
        return None
    source, target = graph.tensors[quantize.inputs[0]], graph.tensors[quantize.outputs[0]]
    if (source.type, target.type) != (schema.TensorType.INT8, schema.TensorType.UINT8):
        return None
    if _params(source) is None or _params(target) is None or _params(source)[0] != _params(target)[0]:
        return None  # only a pure zero-point shift commutes with interpolation
    moved, t = [], int(quantize.inputs[0])
    while True:
        op = producer.get(t)
        if op is None or _opcode(tree, op) not in _PASS_THROUGH or len(consumers.get(t, [])) != 1:
            break
        if t in graph.outputs or _params(graph.tensors[op.inputs[0]]) != _params(graph.tensors[t]):
            break
        moved.append(op)
        t = int(op.inputs[0])
    # Requantize where the values are fewest: before the resize, not before a crop alone (a crop's input is
    # larger than its output).
    sizes = [_elements(graph.tensors[op.inputs[0]]) for op in moved]
    if not moved or min(sizes) >= _elements(target):
        return None
    return quantize, moved[:sizes.index(min(sizes)) + 1]


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape))


def _with_params(tensor, params, name: str):
    new = copy.deepcopy(tensor)
    new.type = schema.TensorType.UINT8
    new.name = name
    new.quantization.scale = np.array([params[0]], np.float32)
    new.quantization.zeroPoint = np.array([params[1]], np.int64)
    new.buffer = 0  # an activation: no constant data
    return new


def requantize_early(model: bytes) -> bytes:
    """`model` (a .tflite flatbuffer with nothing appended) with its output QUANTIZE moved before the
    resize/slice tail, see the module docstring; the same bytes when the rewrite does not apply."""
    return _rewrite(model, _requantize_early)


def input_through_float(model: bytes) -> bytes:
    """`model` with its input conversion (QUANTIZE uint8 -> int8 of the raw pixels) done as DEQUANTIZE
    (uint8 -> float32) then QUANTIZE (float32 -> int8), which XNNPACK takes and runs on every thread; the
    same bytes when the file's input is not converted that way. See the module docstring."""
    return _rewrite(model, _input_through_float)


def rewrite_int8(model: bytes) -> bytes:
    """Both rewrites, as export.py applies them to a full-integer file."""
    return _rewrite(model, _input_through_float, _requantize_early)


def _rewrite(model: bytes, *rewrites) -> bytes:
    """`model` parsed once, each rewrite applied to the tree (each says whether it changed it), packed once;
    the same bytes when none applied."""
    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    changed = [rewrite(tree, tree.subgraphs[0]) for rewrite in rewrites]
    return pack(tree, len(model)) if any(changed) else model


def _requantize_early(tree, graph) -> bool:
    found = _tail(tree, graph)
    if found is None:
        return False
    quantize, moved = found  # moved: the op feeding the QUANTIZE first
    out_params = _params(graph.tensors[quantize.outputs[0]])
    first = moved[-1]  # the first op of the tail in execution order
    # The tail's low-resolution input, requantized to uint8 into a new tensor.
    low = int(first.inputs[0])
    graph.tensors.append(_with_params(graph.tensors[low], out_params, _name(graph.tensors[low]) + "/uint8"))
    requantized = len(graph.tensors) - 1
    # Each moved op now reads and writes uint8 with the output's zero point; the last writes the output.
    for op in moved:
        for t in op.outputs:
            graph.tensors[t] = _with_params(graph.tensors[t], out_params, _name(graph.tensors[t]))
    moved[0].outputs = np.array([graph.outputs[0]], np.int32)
    first.inputs = np.array([requantized, *first.inputs[1:]], np.int32)
    quantize.inputs = np.array([low], np.int32)
    quantize.outputs = np.array([requantized], np.int32)
    ops = [op for op in graph.operators if op is not quantize]
    ops.insert(ops.index(first), quantize)
    graph.operators = ops
    return True


def _input_through_float(tree, graph) -> bool:
    if len(graph.inputs) != 1:
        return False
    pixels = int(graph.inputs[0])
    readers = [op for op in graph.operators if pixels in [int(t) for t in op.inputs]]
    if len(readers) != 1 or _opcode(tree, readers[0]) != _OPS.QUANTIZE:
        return False
    quantize = readers[0]
    if (graph.tensors[pixels].type, graph.tensors[quantize.outputs[0]].type) != (schema.TensorType.UINT8,
                                                                                    schema.TensorType.INT8):
        return False
    floats = copy.deepcopy(graph.tensors[pixels])
    floats.type, floats.name, floats.buffer = schema.TensorType.FLOAT32, _name(floats) + "/float", 0
    floats.quantization = schema.QuantizationParametersT()
    graph.tensors.append(floats)
    dequantize = schema.OperatorT()
    dequantize.opcodeIndex = _opcode_index(tree, _OPS.DEQUANTIZE, version=1)  # version 1: from uint8
    dequantize.inputs = np.array([pixels], np.int32)
    dequantize.outputs = np.array([len(graph.tensors) - 1], np.int32)
    quantize.inputs = np.array([len(graph.tensors) - 1], np.int32)
    graph.operators.insert(graph.operators.index(quantize), dequantize)
    return True


def _opcode_index(tree, builtin: int, version: int) -> int:
    for k, code in enumerate(tree.operatorCodes):
        if _builtin(code) == builtin:
            return k
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    tree.operatorCodes.append(code)
    return len(tree.operatorCodes) - 1


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
