"""Loading a trained model, whatever its format: the one implementation behind evaluate, predict,
export and the benchmarks.

    model = load_model("runs/sample-mobilenetv2_pix2pix-...")   # or X.keras, a SavedModel, X.onnx, X.tflite
    logits = model.forward(batch)       # float32 (N, H, W, 3) in [0, 1] -> float32 logits (N, H, W, C)

A run folder resolves to its model (model.keras, saved_model/ or model.tflite). Files are checked
before a runtime sees them (`check_model_file`): a damaged `.keras` archive or a truncated `.tflite`
flatbuffer is refused in one line instead of crashing or exhausting memory inside TensorFlow.

Class names and colours come from the run's config.json, from a `<model>.json` sidecar beside a model
file (as for the shipped models and export.py's files), or from `segkit.json` inside an exported
SavedModel folder; else from the file itself (an .onnx file's metadata, a .tflite file's labels.txt);
without any they are numbered.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from segkit import catalog, sidecar
from segkit.errors import UserError

MULTIPLE = catalog.MULTIPLE  # the models' contract: H, W divisible by 32
SIDECAR = "segkit.json"  # inside an exported SavedModel folder; a model file's sidecar is <name>.json
_RUN_MODELS = ("model.keras", "saved_model", "model.onnx", "model.tflite")


@dataclasses.dataclass
class LoadedModel:
    """A model ready to run. `forward` maps float32 (N, H, W, 3) in [0, 1] to float32 logits."""

    kind: str  # "keras", "savedmodel", "onnx" or "tflite"
    path: Path  # the model file or folder itself
    forward: object
    info: dict | None  # class_names, colors, config (None: not recorded)
    fixed_size: tuple | None = None  # (H, W) of a TFLite file with a static input shape
    keras_model: object = None  # the keras.Model ("keras")
    trackable: object = None  # the loaded SavedModel object ("savedmodel"), which owns its variables
    input_dtype: object = tf.float32  # a SavedModel's input: float32 (training export) or uint8 (serving export)


def default_info(num_classes: int) -> dict:
    from segkit.data.common import default_colors

    return {"class_names": [f"class{i}" for i in range(num_classes)],
            "colors": [list(c) for c in default_colors(num_classes)]}


def read_info(path: Path) -> dict | None:
    """Class names/colours (and the run's config) from the run's config.json or the sidecar export writes.

    A run folder: its config.json. A SavedModel folder: its segkit.json (export), else the config.json of
    the run folder holding it (unet_tf's RUN/saved_model). A model file X.ext: its entry in the sidecar X.json
    (segkit.sidecar: the entry whose hash is the file's), else (.onnx) the class names in its metadata, else
    the config.json of the folder holding it (for a .tflite file, only if it names the classes the file carries
    in its labels.txt), else (.tflite) those labels with numbered colours.
    """
    embedded = None  # the class names inside a .tflite file
    if path.is_file():
        entry = sidecar.read(path)
        if entry is not None:
            info = sidecar.dataset_info(entry, sidecar.path_for(path))
            if info is not None:
                return info
        if path.suffix == ".onnx":  # an ONNX file of ours carries its classes inside (its metadata)
            try:
                info = sidecar.dataset_info(read_onnx_metadata(path), path)
            except Exception:  # onnx's own errors for a damaged file: loading it says what is wrong
                info = None
            if info is not None:
                return info
        candidates = [path.parent / "config.json"]
        if path.suffix == ".tflite":  # a .tflite file of ours carries its class names inside (labels.txt)
            from segkit.inference.tflite_runtime import read_labels

            embedded = read_labels(path)
    else:
        candidates = [path / "config.json", path / SIDECAR]
        if (path / "saved_model.pb").is_file():
            candidates.append(path.parent / "config.json")
    for candidate in candidates:
        if candidate.is_file():
            try:
                values = json.loads(candidate.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"{candidate} (the classes of {path}) is not readable JSON: {exc}") from None
            info = sidecar.dataset_info(values, candidate) if isinstance(values, dict) else None
            if info is not None and (embedded is None or info["class_names"] == embedded):
                return info
    if embedded is not None:  # no record of this file's classes but its own: numbered colours
        return {**default_info(len(embedded)), "class_names": embedded, "config": {}}
    return None


def read_onnx_metadata(path: Path) -> dict:
    """The `metadata_props` of an .onnx file, JSON values decoded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    values = {}
    for entry in model.metadata_props:
        try:
            values[entry.key] = json.loads(entry.value)
        except ValueError:
            values[entry.key] = entry.value
    return values


def find_model_file(run_dir: Path) -> Path:
    for name in _RUN_MODELS:
        if (run_dir / name).exists():
            return run_dir / name
    raise UserError(f"run folder {run_dir} has no model (looked for {', '.join(_RUN_MODELS)})")


def resolve(path, flag: str = "--model") -> Path:
    """The model file or SavedModel folder that `path` (maybe a run folder) names."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {str(path)!r} does not exist")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        return find_model_file(path)
    return path


# ---------------------------------------------------------------------------------------------
# Checking a file before a runtime sees it

# TFLite TensorType -> bytes per element (the types our exports use; others are not size-checked).
_TFLITE_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8}


def check_keras_file(path: Path, what: str = "Keras model") -> None:
    """A UserError unless `path` is an intact .keras archive (zip with config.json and model.weights.h5)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as exc:
        bad, names = f"{type(exc).__name__}: {exc}", set()
    if bad or not {"config.json", "model.weights.h5"} <= names:
        raise UserError(f"{what} {path} is damaged or not a .keras file ({bad or 'incomplete archive'})")


def check_tflite_file(path: Path) -> None:
    """A UserError unless `path` is a complete TFLite flatbuffer: the identifier, every table and vector
    inside the file, every tensor's buffer index valid and its constant data the size its shape needs.
    A truncated file handed to the interpreter can crash the process or allocate without bound."""
    from tensorflow.lite.python import schema_py_generated as schema

    payload = path.read_bytes()
    if len(payload) < 8 or payload[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite file (no TFL3 identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(payload), 0)
    except Exception as exc:  # struct.error / IndexError from reading past the end
        reason = str(exc) if isinstance(exc, struct.error) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"{path} is truncated or damaged (a file of {len(payload)} bytes; {reason}); "
                        "export it again") from None
    buffers = model.buffers or []
    problems = []
    for k, buffer in enumerate(buffers):
        if buffer.offset and buffer.offset > 1 and buffer.offset + buffer.size > len(payload):
            problems.append(f"buffer {k} ends at byte {buffer.offset + buffer.size} of {len(payload)}")
    for subgraph in model.subgraphs or []:
        tensors = subgraph.tensors or []
        for index in list(subgraph.inputs if subgraph.inputs is not None else []) + \
                list(subgraph.outputs if subgraph.outputs is not None else []):
            if not 0 <= index < len(tensors):
                problems.append(f"input/output tensor {index} does not exist")
        for tensor in tensors:
            if not 0 <= tensor.buffer < max(1, len(buffers)):
                problems.append(f"tensor {tensor.name!r} names buffer {tensor.buffer} of {len(buffers)}")
                continue
            data = buffers[tensor.buffer].data if buffers else None
            size = _TFLITE_ITEMSIZE.get(tensor.type)
            shape = [] if tensor.shape is None else list(tensor.shape)
            if data is not None and len(data) and size and all(d > 0 for d in shape):
                if len(data) != int(np.prod(shape, dtype=np.int64)) * size:
                    problems.append(f"tensor {tensor.name!r} holds {len(data)} bytes, its shape needs "
                                    f"{int(np.prod(shape, dtype=np.int64)) * size}")
    if not model.subgraphs:
        problems.append("no subgraph")
    if problems:
        raise UserError(f"{path} is damaged: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                                               else "") + "; export it again")


def check_model_file(path: Path) -> None:
    """Refuse a damaged model file in one line (see check_keras_file / check_tflite_file)."""
    if path.suffix == ".keras":
        check_keras_file(path)
    elif path.suffix == ".tflite":
        check_tflite_file(path)


# ---------------------------------------------------------------------------------------------
# Loading each format


def _load_keras(path: Path):
    import keras

    from segkit import losses  # noqa: F401  (registers the custom losses/metrics/layers for deserialisation)
    from segkit import metrics  # noqa: F401
    from segkit import models  # noqa: F401
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # a foreign or damaged file: Keras raises many kinds
        text = str(exc).strip().splitlines()
        raise UserError(f"cannot load Keras model {path}: {type(exc).__name__}: {text[0] if text else ''}") from None

    def forward(batch):
        return np.asarray(model(tf.constant(batch, tf.float32), training=False), np.float32)

    return forward, model


def _load_savedmodel(path: Path):
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        missing = [name for name in ("saved_model.pb", "variables/variables.index") if not (path / name).is_file()]
        raise UserError(f"cannot load SavedModel {path}: {type(exc).__name__}"
                        + (f" ({text})" if text else "")
                        + (f"; it lacks {', '.join(missing)}" if missing else "")) from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise UserError(f"SavedModel {path} has no serving_default signature")
    (input_name, input_spec), = signature.structured_input_signature[1].items()
    if "logits" not in signature.structured_outputs:
        raise UserError(f"SavedModel {path} does not return 'logits' (has {sorted(signature.structured_outputs)})")

    def forward(batch):
        x = tf.constant(batch)
        if input_spec.dtype == tf.uint8:
            x = tf.cast(tf.round(tf.clip_by_value(x, 0, 1) * 255), tf.uint8)
        return signature(**{input_name: x})["logits"].numpy().astype(np.float32)

    forward.signature, forward.input_name = signature, input_name
    return forward, loaded, input_spec.dtype


def _load_onnx(path: Path, num_threads=None):
    """onnxruntime on the CPU; the file takes float32 (N, H, W, 3) in [0, 1] of any size (export.py's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise UserError(f"cannot load ONNX model {path}: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    name = session.get_inputs()[0].name

    def forward(batch):
        return np.asarray(session.run(None, {name: np.asarray(batch, np.float32)})[0], np.float32)

    forward.session = session
    return forward


def load_model(path, num_threads: int | None = None, flag: str = "--model") -> LoadedModel:
    """The model at `path`: a run folder, a .keras file, a SavedModel folder or a .tflite file."""
    path = Path(path)
    model_path = resolve(path, flag)
    check_model_file(model_path)
    info = read_info(path)
    if model_path.is_dir() and (model_path / "saved_model.pb").is_file():
        forward, loaded, dtype = _load_savedmodel(model_path)
        model = LoadedModel("savedmodel", model_path, forward, info, trackable=loaded, input_dtype=dtype)
    elif model_path.suffix == ".keras":
        forward, keras_model = _load_keras(model_path)
        model = LoadedModel("keras", model_path, forward, info, keras_model=keras_model)
    elif model_path.suffix == ".onnx":
        forward = _load_onnx(model_path, num_threads)
        model = LoadedModel("onnx", model_path, forward, info)
    elif model_path.suffix == ".tflite":
        from segkit.inference.tflite_runtime import tflite_batch_fn

        forward, fixed = tflite_batch_fn(model_path, num_threads=num_threads)
        model = LoadedModel("tflite", model_path, forward, info, fixed_size=fixed)
    else:
        raise UserError(f"{flag} {str(path)!r} is not a run folder, .keras file, SavedModel folder, .onnx or "
                        ".tflite file")
    # One probe at the model's smallest size: its channels must be the recorded classes (a sidecar or run config
    # of another model is refused here, not discovered as wrong class names in a picture).
    try:
        probe = np.asarray(model.forward(np.zeros((1, *(model.fixed_size or (MULTIPLE, MULTIPLE)), 3), np.float32)))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{model_path} does not run as a segmentation model on a {MULTIPLE}x{MULTIPLE} image "
                        f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                        ) from None
    if probe.ndim != 4:
        raise UserError(f"{model_path} is not a segmentation model: it maps an image to shape "
                        f"{tuple(probe.shape)}, not (N, H, W, classes)")
    if model.info is None:
        model.info = default_info(max(2, probe.shape[-1]))
    sidecar.check_classes(model.info, int(probe.shape[-1]), model_path)
    return model
