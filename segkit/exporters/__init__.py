"""Exporting a trained model for serving (SavedModel), for mobile (TFLite), for ONNX runtimes or for
shipping (.keras), checked against the source: the API behind export.py.

    result = export.export_model("runs/RUN", "tflite", "exported/model.tflite", quantize="int8",
                                 image_size=(192, 256))
    print(result.parity.agreement, result.size_bytes)

By job: segkit.exporters.source (what is exported, in float32), .savedmodel (the serving signature),
.tflite (conversion and int8 calibration), .metadata (class names inside a .tflite file, for
MediaPipe), .onnx, .check (parity against the source, tolerances). The file
is written under a temporary name, loaded back the way evaluate.py loads it, checked, and only then
renamed into place with its sidecar (its entry in `<stem>.json`, keyed by the file's hash, see
segkit.sidecar; `segkit.json` inside a SavedModel folder) holding the classes, the run's config and the
check's figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np

from segkit import catalog, data, fileio, memory, sidecar
from segkit.errors import UserError
from segkit.config import run_loader_options
from segkit.exporters.check import Parity, check_images, compare, require
from segkit.exporters import web
from segkit.exporters.metadata import add_segmenter_metadata
from segkit.exporters.onnx import write_onnx
from segkit.exporters.savedmodel import write_savedmodel
from segkit.exporters.source import Source, load_source
from segkit.exporters.tflite import calibration_images, rewrite_int8_file, tflite_bytes
from segkit.inference.predictor import load_predictor
from segkit.inference.loading import SIDECAR
from segkit.inference.tflite_runtime import read_labels

FORMATS = catalog.EXPORT_FORMATS
QUANTIZE = catalog.QUANTIZE
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "keras": ".keras"}


@dataclasses.dataclass
class ExportResult:
    out: Path
    size_bytes: int
    parity: Parity
    checked_on: str  # e.g. "4 camvid validation images at 192x256"
    note: str = ""  # e.g. the precision change


def check_request(fmt, out, quantize="none", image_size=None, calibration_images=64, check_count=4) -> None:
    """Refuse an impossible request before loading anything (format, quantization, output name, sizes)."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    out = Path(out)
    fileio.check_writable(out, "--out", kind="folder" if fmt == "savedmodel" else "file")
    if fmt == "savedmodel":
        if quantize != "none":
            raise UserError(f"--quantize {quantize} applies to --format tflite only")
        if image_size:
            raise UserError("--image-size applies to --format tflite only (the SavedModel takes any size)")
        if out.exists() and not (out / "saved_model.pb").is_file():
            raise UserError(f"--out {str(out)!r} exists and is not a SavedModel; choose a new folder")
    elif fmt in ("keras", "onnx"):
        if quantize != "none" or image_size:
            raise UserError("--quantize and --image-size apply to --format tflite only")
        if out.suffix != SUFFIXES[fmt]:
            raise UserError(f"--out must be a {SUFFIXES[fmt]} file for --format {fmt}, got {str(out)!r}")
    else:
        if out.suffix != ".tflite":
            raise UserError(f"--out must be a .tflite file for --format tflite, got {str(out)!r}")
        if out.is_dir():
            raise UserError(f"--out {str(out)!r} is a folder; give a .tflite file name")
    if image_size and (len(image_size) != 2 or any(s <= 0 for s in image_size)):
        raise UserError(f"--image-size must be two positive sizes, got {list(image_size)}")
    for flag, value in (("--calibration-images", calibration_images), ("--check-images", check_count)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")


PATH_FIELDS = ("run_dir", "init_from", "distill_from")  # config fields naming the training machine's files


def sidecar_payload(source: Source, fmt, quantize, size, parity: Parity, recipe=None) -> dict:
    """The sidecar's content. With `recipe` (for a file that is shipped to others) the sidecar names the
    recipe, and the training machine's paths (run folder, --init-from, --distill-from, the exported source)
    keep only their last component: e.g. "camvid-ddrnet" rather than "/home/me/runs/camvid-ddrnet". An
    absolute data folder becomes relative to the folder export runs in (the repository, for shipped files),
    as the scripts read a relative one: "../shared/datasets/camvid" rather than "/work/shared/datasets/camvid"."""
    info = source.info or {}
    names = [_source_name(p) if recipe else str(p) for p in source.members or [source.path]]
    source_name = names if source.members else names[0]  # an ensemble: its models' names
    payload = {"config": _shared_config(info.get("config", {}), recipe),
               "export": {"source": source_name, "format": fmt, "quantize": quantize,
                          "image_size": list(size) if size else None, **parity.as_dict()}}
    if recipe:
        payload["recipe"] = recipe
    if info.get("members"):  # an ensemble (or a file exported from one): how each of its models was trained
        payload["members"] = _shared_members(info["members"], recipe)
    if "class_names" in info:
        payload["dataset_info"] = {"class_names": info["class_names"], "colors": info["colors"]}
    return payload


def _shared_config(config: dict, recipe) -> dict:
    """A run's config as the sidecar records it: with `recipe`, without this machine's folders."""
    config = dict(config)
    if recipe:
        for field in PATH_FIELDS:
            if config.get(field):
                config[field] = Path(config[field]).name
        if config.get("data_dir") and Path(config["data_dir"]).is_absolute():
            config["data_dir"] = os.path.relpath(config["data_dir"])
    return config


def _shared_members(members: list, recipe) -> list:
    """An ensemble's "members" record (segkit.exporters.source.ensemble_source) as the sidecar records it."""
    return [{**member, "source": _source_name(Path(member.get("source", ""))) if recipe else member.get("source"),
             "config": _shared_config(member.get("config") or {}, recipe),
             **({"members": _shared_members(member["members"], recipe)} if member.get("members") else {})}
            for member in members]


def _source_name(path: Path) -> str:
    """A model's name without this machine's folders: the file's name, or a run folder's for its model.keras."""
    return path.name if path.name != "model.keras" else path.parent.name


def _write(source, fmt, quantize, size, tmp: Path, train_ds, calibration_count) -> None:
    if fmt == "savedmodel":
        write_savedmodel(source, tmp)
    elif fmt == "keras":
        source.model.save(tmp)  # float32 and uncompiled: no optimizer state
    elif fmt == "onnx":
        write_onnx(source, tmp, source.info)
    else:
        calibration = calibration_images(train_ds, size, calibration_count) if quantize == "int8" else None
        names = (source.info or {}).get("class_names")
        payload = tflite_bytes(source, size, quantize, calibration)
        if names:  # labels and the output's activation inside the file (MediaPipe's ImageSegmenter reads them)
            payload = add_segmenter_metadata(payload, names, name=source.path.stem, image_size=size,
                                             description="Semantic segmentation: uint8 RGB pixels in, per-class "
                                                         "logits out (softmax gives probabilities).")
        tmp.write_bytes(payload)


def _ours(out: Path, fmt: str) -> bool:
    """Whether `out`, which exists, is an earlier export of segkit's (so this one may replace it)."""
    if fmt == "savedmodel":
        return (out / SIDECAR).is_file() and sidecar.is_ours(out / SIDECAR)
    try:
        entry = sidecar.read(out)
    except UserError:
        return sidecar.is_ours(sidecar.path_for(out))  # ours, of another version: replaced whole
    return entry is not None and "export" in entry


@contextlib.contextmanager
def _writer(out: Path, fmt: str):
    """(tmp, keep): write the export to `tmp`, and call keep(payload) with its sidecar entry. A SavedModel
    folder holds its sidecar inside (one folder exchanged in one step); a file gets its entry in the shared
    sidecar, paired by its hash (segkit.sidecar.write_pair)."""
    if fmt == "savedmodel":
        with fileio.atomic_path(out) as tmp:
            yield tmp, lambda payload: fileio.write_json(tmp / SIDECAR, payload)
        return
    with sidecar.write_pair(out) as pair:
        yield pair.tmp, lambda payload: setattr(pair, "payload", payload)


def export_web(model, out, *, quantize=None, image_size=None, **options) -> ExportResult:
    """A static site in `out` that runs the model in a browser (segkit.exporters.web): `model` is a run folder or
    .keras file (or a list of them: their ensemble), exported to TFLite here (int8 unless `quantize` says
    otherwise; checked as any export), or a .tflite file with segmenter metadata (segkit's own TFLite exports),
    copied (an int8 file from before export rewrote its conversions gets them rewritten: the same values).
    The folder is written beside `out` and swapped in whole."""
    quantize = quantize or "int8"
    out = Path(out)
    models = [Path(m) for m in model] if isinstance(model, (list, tuple)) else [Path(model)]
    for path in models:
        web.check_request(out, path, quantize)
    given = models[0] if len(models) == 1 else Path("ensemble")
    out.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_path(out) as site:
        site.mkdir()
        tflite = site / "model.tflite"
        if given.suffix == ".tflite" and given.is_file():
            predictor = load_predictor(given)
            data = given.read_bytes()
            if read_labels(data) is None or predictor.fixed_size is None:
                raise UserError(f"{given} has no segmenter metadata or no fixed input size; export the model it "
                                "came from with --format web instead")
            entry = sidecar.read(given) or {}
            rewritten = rewrite_int8_file(data)
            with sidecar.write_pair(tflite) as pair:
                pair.tmp.write_bytes(rewritten)
                pair.payload = {k: v for k, v in entry.items() if k != "sha256"}
                pair.payload.setdefault("dataset_info", {"class_names": predictor.class_names,
                                                         "colors": predictor.colors})
            recorded = entry.get("export", {})
            parity = Parity(recorded.get("max_logit_difference", float("nan")), recorded.get("max_logit", float("nan")),
                            recorded.get("mask_agreement", float("nan")))
            how = "copied as it is" if rewritten is data else "copied, its uint8 <-> int8 conversions rewritten"
            result = ExportResult(out, 0, parity, f"{given.name}'s own export check ({how})")
            size, info = predictor.fixed_size, {"class_names": predictor.class_names, "colors": predictor.colors}
        else:
            result = export_model(model, "tflite", tflite, quantize=quantize, image_size=image_size, **options)
            predictor = load_predictor(tflite)
            size, info = predictor.fixed_size, {"class_names": predictor.class_names, "colors": predictor.colors}
        web.write_site(site, tflite, info, size)
    result.out, result.size_bytes = out, fileio.size_of(out)
    result.note = (result.note + "; " if result.note else "") + f"serve it with: python -m http.server -d {out}"
    return result


def export_model(model, fmt, out, *, quantize=None, image_size=None, dataset=None, data_dir=None,
                 data_options=None, calibration_count=64, check_count=4, recipe=None) -> ExportResult:
    """Export the model at `model` (run folder, .keras file or unet_tf SavedModel; a list of two or more run folders
    or .keras files: their ensemble, segkit.models.ensemble) as `fmt` into `out`.
    The check (and int8 calibration) reads the run's dataset with its loader options unless `dataset`,
    `data_dir` and `data_options` (a dict or KEY=VALUE strings) say otherwise. `recipe` (a line saying how
    the model was made, e.g. "README.md, Reproduce") goes into the sidecar in place of this machine's paths.
    `quantize` (TFLite and web only): none, fp16, dynamic or int8; by default none, int8 for the web."""
    if fmt == "web":
        return export_web(model, out, quantize=quantize, image_size=image_size, dataset=dataset, data_dir=data_dir,
                          data_options=data_options, calibration_count=calibration_count, check_count=check_count,
                          recipe=recipe)
    with float32_policy():
        return _export(model, fmt, out, quantize or "none", image_size, dataset, data_dir, data_options,
                       calibration_count, check_count, recipe)


@contextlib.contextmanager
def float32_policy():
    """Keras' global dtype policy float32 inside the block, the caller's after it. Exports compute in float32,
    and some layers make sublayers with the global policy while they run (keras-hub's pyramid pooling makes
    its Resizing in call): traced after a mixed-precision training in the same process, they put half
    precision into the exported graph."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _export(model, fmt, out, quantize, image_size, dataset, data_dir, data_options, calibration_count, check_count,
            recipe) -> ExportResult:
    check_request(fmt, out, quantize, image_size, calibration_count, check_count)
    source = load_source(model)
    run_config = (source.info or {}).get("config", {})
    dataset_name = dataset or run_config.get("dataset")
    if dataset_name is None:
        raise UserError(f"--dataset is needed: {model} does not record which dataset it was trained on "
                        "(export checks the exported file on its validation images)")
    size = None
    if fmt == "tflite":
        size = tuple(image_size or run_config.get("image_size") or ())
        if len(size) != 2:
            raise UserError(f"--image-size is needed: {model} does not record its training image size")
        # The conversion traces, the check runs and int8 calibration runs the model at this size: say so now
        # if it cannot fit, rather than after minutes of work.
        memory.check_inference_size(*size, run_config.get("model") or source.kind, flag="--image-size",
                                    num_classes=len((source.info or {}).get("class_names") or ()),
                                    what=f"exporting at {size[1]}x{size[0]}", tiles=False)
    out = Path(out)
    if out.resolve() in {p.resolve() for p in (source.path, *source.members)}:
        raise UserError(f"--out {str(out)!r} is the model being exported; choose another path")
    if fmt == "keras" and source.model is None:
        raise UserError(f"--format {fmt} needs a Keras model; {source.path} is a {source.kind}")
    if fmt != "savedmodel" and sidecar.path_for(out).exists() and not sidecar.is_ours(sidecar.path_for(out)):
        raise UserError(f"--out {str(out)!r} would overwrite {sidecar.path_for(out)}, which segkit's export did "
                        "not write; choose another name")
    if out.exists() and not _ours(out, fmt):
        raise UserError(f"--out {str(out)!r} exists and is not a file segkit's export wrote; remove it or choose "
                        "another name")
    kind = fmt if fmt != "tflite" else quantize

    loader = dict(run_loader_options(run_config, dataset, data_options), dataset=dataset, data_dir=data_dir)
    val_ds, val_info = data.load_run_data(model, run_config, dataset_name, run_config.get("val_split", "val"), **loader)
    train_ds, train_info = val_ds, val_info
    if quantize == "int8":
        train_ds, train_info = data.load_run_data(model, run_config, dataset_name,
                                                  run_config.get("train_split", "train"), **loader)
    made = [p for p in reversed([out.parent, *out.parent.parents]) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with data.data_errors_as_user_errors(val_info, train_info), _writer(out, fmt) as (tmp, keep):
            images = check_images(val_ds, check_count)
            if not images:
                raise UserError(f"{val_info.name}/{val_info.split} has no images to check the export on")
            _write(source, fmt, quantize, size, tmp, train_ds, calibration_count)
            exported = load_predictor(tmp)
            run = exported.batch_fn
            if fmt in ("keras", "onnx"):  # any-size models: pad to a multiple of 32 like everywhere else
                run = lambda batch: np.stack([exported.logits(image) for image in batch])  # noqa: E731
            parity = compare(source, run, images, size)
            require(parity, kind, f"{fmt} ({kind})", source.path)
            keep(sidecar_payload(source, fmt, quantize, size, parity, recipe))
    except BaseException:
        for folder in reversed(made):  # the folders this export made for --out, if they stayed empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    where = f"at {size[0]}x{size[1]}" if size else "at their own size"
    return ExportResult(out, fileio.size_of(out), parity, f"{len(images)} {dataset_name} validation images {where}",
                        source.note)
