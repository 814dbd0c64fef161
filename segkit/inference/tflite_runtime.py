"""Running a .tflite file as a batch function, float or quantized input alike.

Two runtimes run a .tflite file from Python here: TensorFlow's bundled `tf.lite.Interpreter`
(deprecated, still in TF 2.21) and LiteRT's `ai_edge_litert.interpreter.Interpreter`. The default
is `tf.lite.Interpreter`, with the XNNPACK delegate for quantized (int8/uint8) models and the
built-in kernels for float ones, because on AVX-512 CPUs TensorFlow's built-in float kernels beat
XNNPACK while XNNPACK is twice as fast for int8, and LiteRT's wheel has slower (SSE) built-in
kernels; docs/tflite_runtimes.md holds the measurements. Fixed-size files let XNNPACK take the
whole graph (with a dynamic input shape it is applied before the shapes are known and takes little).

Choose otherwise with the environment variables SEGKIT_TFLITE_RUNTIME=tf|litert and
SEGKIT_TFLITE_XNNPACK=auto|on|off (or the arguments of `make_interpreter`); `python -m bench.latency`
measures the choices on your machine. Files are checked by segkit.inference.loading before they get here.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from segkit.errors import UserError

RUNTIMES = ("tf", "litert")
LABELS_FILE = "labels.txt"  # in the zip a segkit .tflite file carries after its flatbuffer (MediaPipe reads it)
XNNPACK = ("auto", "on", "off")


def _choice(value, env: str, allowed, default: str) -> str:
    value = value or os.environ.get(env) or default
    if value not in allowed:
        raise UserError(f"{env} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _interpreter_class(runtime: str):
    """(Interpreter class, OpResolverType enum) of the runtime."""
    if runtime == "litert":
        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, litert.OpResolverType
    import tensorflow as tf

    if not hasattr(tf.lite, "Interpreter"):  # announced for deletion; LiteRT then
        return _interpreter_class("litert")
    return tf.lite.Interpreter, tf.lite.experimental.OpResolverType


def is_quantized(interpreter) -> bool:
    """True if the model computes with 8-bit integers (int8 or dynamic-range export); the raw uint8 pixel
    input of a float export (no quantization scale) does not count."""
    return describe(interpreter) in ("int8", "dynamic")


def make_interpreter(path: Path, num_threads: int | None = None, runtime: str | None = None,
                     xnnpack: str | None = None):
    """An allocated interpreter for `path`.

    runtime: "tf" (tf.lite.Interpreter, default) or "litert" (ai_edge_litert); default from
        SEGKIT_TFLITE_RUNTIME.
    xnnpack: "auto" (default: XNNPACK for quantized models, built-in kernels for float ones),
        "on" or "off"; default from SEGKIT_TFLITE_XNNPACK. See the module docstring for why.
    """
    runtime = _choice(runtime, "SEGKIT_TFLITE_RUNTIME", RUNTIMES, "tf")
    xnnpack = _choice(xnnpack, "SEGKIT_TFLITE_XNNPACK", XNNPACK, "auto")
    interpreter_class, resolvers = _interpreter_class(runtime)

    def build(use_xnnpack: bool):
        resolver = resolvers.AUTO if use_xnnpack else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice, once per file
            warnings.simplefilter("ignore")
            try:
                return interpreter_class(model_path=str(path), num_threads=num_threads,
                                         experimental_op_resolver_type=resolver)
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"cannot load TFLite model {path}: {str(exc).splitlines()[0]}") from None

    interpreter = build(xnnpack == "on")
    if xnnpack == "auto" and is_quantized(interpreter):
        interpreter = build(True)
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:  # a damaged file that passed the flatbuffer check
        raise UserError(f"cannot run TFLite model {path}: {str(exc).splitlines()[0]}") from None
    return interpreter


def tflite_batch_fn(path: Path, num_threads: int | None = None, runtime: str | None = None,
                    xnnpack: str | None = None):
    """(fn, fixed_size): fn maps float32 (N, H, W, 3) in [0, 1], or uint8 pixels (N, H, W, 3), to float32
    logits; `fn.labels` maps the same input to int32 class indices (N, H, W) at the file's output size.
    fixed_size is the (H, W) the file was exported with, or None when its input shape is dynamic.

    A uint8 input takes the image's 8-bit pixel values: round(x / scale + zero_point) for a quantized
    one (export.py's int8 files: scale 1/255, zero point 0), round(255 x) for the raw-pixel input of
    export.py's float files; uint8 pixels go into such an input as they are. Quantized outputs are
    dequantized, (q - zero_point) * scale; `fn.labels` takes the argmax of the quantized values
    themselves, which is the same class (a positive scale keeps the order, ties included) without
    making the float logits."""
    interpreter = make_interpreter(path, num_threads, runtime, xnnpack)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    shape = inp["shape_signature"] if len(inp.get("shape_signature", [])) else inp["shape"]
    fixed = None if (shape[1] <= 0 or shape[2] <= 0) else (int(shape[1]), int(shape[2]))
    in_scale, in_zero = inp["quantization"]
    if inp["dtype"] in (np.uint8, np.int8) and not in_scale:  # a uint8 input without quantization: raw pixels
        in_scale, in_zero = 1 / 255, 0
    # uint8 pixels p are the input's own values when round(p / 255 / scale + zero) == p for every p.
    takes_pixels = inp["dtype"] == np.uint8 and in_zero == 0 and abs(in_scale * 255 - 1) < 1e-6
    out_scale, out_zero = out["quantization"]
    quantized_out = out["dtype"] in (np.uint8, np.int8)

    def invoke(image):
        """The raw output (1, h, w, C) for one image (H, W, 3), float32 in [0, 1] or uint8 pixels."""
        x = image[None]
        if fixed is None:
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
        if x.dtype == np.uint8 and not takes_pixels:
            x = x.astype(np.float32) / 255
        if x.dtype != np.uint8 and inp["dtype"] in (np.uint8, np.int8):
            low, high = (0, 255) if inp["dtype"] == np.uint8 else (-128, 127)
            x = np.clip(np.round(x / in_scale + in_zero), low, high)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
        try:
            interpreter.invoke()
        except RuntimeError as exc:  # e.g. XNNPACK refusing a damaged quantization parameter
            raise UserError(f"cannot run TFLite model {path}: {str(exc).strip().splitlines()[0]}") from None
        return interpreter.get_tensor(out["index"])

    def each_output(batch):
        """The raw output (h, w, C) of each image; TFLite models here are exported with batch 1."""
        batch = np.asarray(batch)
        for image in batch if batch.dtype == np.uint8 else np.asarray(batch, np.float32):
            yield invoke(image)[0]

    def run(batch):
        results = None
        for k, y in enumerate(each_output(batch)):
            if results is None:
                results = np.empty((len(batch), *y.shape), np.float32)
            if quantized_out:
                np.subtract(y, out_zero, out=results[k], dtype=np.float32)
                results[k] *= out_scale
            else:
                results[k] = y
        return results

    classes = None  # (H, W, C) raw output -> (H, W) int32 classes, made on the first call of `labels`

    def labels(batch):
        nonlocal classes
        results = None
        for k, y in enumerate(each_output(batch)):
            if results is None:
                results = np.empty((len(batch), *y.shape[:2]), np.int32)
            if y.shape[-1] == 1:  # one-logit binary model: logit > 0, i.e. q > zero point
                results[k] = (y[..., 0].astype(np.float32) > (out_zero if quantized_out else 0))
                continue
            if classes is None:
                classes = argmax_fn(y.shape, y.dtype, runtime) if fixed is not None else _numpy_argmax
            results[k] = classes(y)
        return results

    run.interpreter = interpreter
    run.labels = labels
    out_shape = out.get("shape_signature", out["shape"])
    run.output_size = None if fixed is None else (int(out_shape[1]), int(out_shape[2]))
    return run, fixed


def _numpy_argmax(y: np.ndarray) -> np.ndarray:
    return np.argmax(y, axis=-1)


def argmax_fn(shape, dtype, runtime: str | None = None):
    """A function mapping an array of `shape` (H, W, C) and `dtype` (int8, uint8 or float32) to its int32
    argmax over C, the first of equal values (as np.argmax), computed by a one-op TFLite graph (ARG_MAX).

    Over the few classes of a segmentation output np.argmax spends its time per pixel, not per value: on the
    DDRNet-tiny file's 360x480x11 uint8 output of a CamVid frame, 1.74 ms against the graph's 0.89 ms, copies in
    and out included (AMD EPYC with AVX512-VNNI, nothing else running). np.argmax where the graph cannot be made
    (no TensorFlow schema at hand, another dtype)."""
    try:
        model = _argmax_graph(tuple(int(n) for n in shape), np.dtype(dtype))
        interpreter_class, resolvers = _interpreter_class(_choice(runtime, "SEGKIT_TFLITE_RUNTIME", RUNTIMES, "tf"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = interpreter_class(model_content=model, num_threads=1,
                                            experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ImportError, KeyError, ValueError, RuntimeError):
        return _numpy_argmax
    given = interpreter.tensor(interpreter.get_input_details()[0]["index"])
    made = interpreter.tensor(interpreter.get_output_details()[0]["index"])

    def classes(y: np.ndarray) -> np.ndarray:
        np.copyto(given()[0], y)
        interpreter.invoke()
        return made()[0].copy()

    return classes


def _argmax_graph(shape: tuple, dtype: np.dtype) -> bytes:
    """The flatbuffer of a graph (1, *shape) `dtype` -> ARG_MAX over the last axis -> (1, *shape[:-1]) int32."""
    from tensorflow.lite.python import schema_py_generated as schema

    types = {np.dtype(np.int8): schema.TensorType.INT8, np.dtype(np.uint8): schema.TensorType.UINT8,
             np.dtype(np.float32): schema.TensorType.FLOAT32}

    def tensor(name: str, dims, kind: int, buffer: int):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array(dims, np.int32), kind, buffer
        return t

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ARG_MAX
    code.version = 2  # int8 and uint8 inputs
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType = schema.BuiltinOptions.ArgMaxOptions
    op.builtinOptions = schema.ArgMaxOptionsT()
    op.builtinOptions.outputType = schema.TensorType.INT32
    graph = schema.SubGraphT()
    graph.tensors = [tensor("logits", (1, *shape), types[dtype], 1),
                     tensor("axis", (), schema.TensorType.INT32, 2),
                     tensor("classes", (1, *shape[:-1]), schema.TensorType.INT32, 3)]
    graph.inputs, graph.outputs, graph.operators = [0], [2], [op]
    buffers = [schema.BufferT() for _ in range(4)]  # buffer 0: the empty one every file starts with
    buffers[2].data = np.frombuffer(np.int32(len(shape)).tobytes(), np.uint8)  # the last axis of (1, *shape)
    tree = schema.ModelT()
    tree.version, tree.operatorCodes, tree.subgraphs, tree.buffers = 3, [code], [graph], buffers
    return pack(tree, 1024)


def pack(tree, size_hint: int) -> bytes:
    """The .tflite flatbuffer of a `schema.ModelT` tree (parsed and edited, or built); `size_hint`: about its size
    in bytes."""
    import flatbuffers

    b = flatbuffers.Builder(size_hint + 4096)
    b.Finish(tree.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def describe(interpreter) -> str:
    """"int8" (full-integer), "dynamic" (int8 weights, float activations), "fp16" or "float32"."""
    inp = interpreter.get_input_details()[0]
    if inp["dtype"] in (np.uint8, np.int8) and inp["quantization"][0]:
        return "int8"
    dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
    if np.int8 in dtypes:
        return "dynamic"
    return "fp16" if np.float16 in dtypes else "float32"


def read_labels(model: bytes | Path) -> list | None:
    """The class names a .tflite file carries (labels.txt in the zip appended by segkit's export, one per line),
    from its bytes or its path; None when it carries none."""
    try:
        with zipfile.ZipFile(io.BytesIO(model) if isinstance(model, bytes) else model) as zf:
            return zf.read(LABELS_FILE).decode().splitlines() or None
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, OSError):
        return None
