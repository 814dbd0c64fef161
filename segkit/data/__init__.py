"""Datasets: one registry, one contract.

    ds, info = data.load_dataset("camvid", data_dir="path/to/CamVid", split="train")

yields `(image float32 (H, W, 3) in [0, 1], mask int32 (H, W))` with 255 = ignore;
`info` holds class names, colours and the file list. See data/common.py.
"""

import dataclasses
import inspect
import math
import os
import typing

# Before TensorFlow is first imported: for `segkit verify` this package is imported before the
# module, and TF's C++ warnings about each failed data check would repeat our one-line messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402

from segkit import catalog  # noqa: E402
from segkit.data.common import (IGNORE, DatasetInfo, class_pixel_counts, data_errors_as_user_errors,  # noqa: E402
                         explain_data_error)
from segkit.errors import UserError  # noqa: E402

# name -> loader: every dataset of segkit.catalog is the module segkit.data.<name> with its `load` function.
DATASETS = {name: importlib.import_module(f"segkit.data.{name}").load for name in catalog.DATASETS}


def parse_option(text: str):
    """("key", "value") from "key=value"; the value stays a string until `coerce_options` reads it with the
    type the loader declares (so a sequence name such as 0016E5 is not taken for the number 1.6e6)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"a data option must be KEY=VALUE, got {text!r}")
    return key, raw


def loader_options(name: str) -> list:
    """The options dataset `name`'s loader takes besides data_dir and split (e.g. voc: aug, cache)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return [p for p in inspect.signature(DATASETS[name]).parameters if p not in ("data_dir", "split")]


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


def _coerce(name: str, key: str, value, hint):
    """`value` (a string from the command line, or a JSON value from a config) as the type `hint`."""
    kinds = typing.get_args(hint) or (hint,)
    where = f"{name}: data option {key}={value!r}"
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        if type(None) in kinds:
            return None
        raise UserError(f"{where} cannot be none")
    if bool in kinds:
        if isinstance(value, bool):
            return value
        word = value.strip().lower() if isinstance(value, str) else None
        if word in TRUE_WORDS + FALSE_WORDS:
            return word in TRUE_WORDS
        raise UserError(f"{where} must be true or false (also 1/0, yes/no)")
    for kind in (int, float):
        if kind in kinds:
            if isinstance(value, str):
                try:
                    value = kind(value)
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
                    or not math.isfinite(value) or abs(value) > 2 ** 31:
                raise UserError(f"{where} must be {'an integer' if kind is int else 'a number'}")
            return kind(value)
    if str in kinds:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string")
        return value
    return value  # an option without a declared type (shapes' image_size) goes through as given


def coerce_options(name: str, options: dict) -> dict:
    """`options` for dataset `name`'s loader, each read strictly as the type the loader declares: booleans
    are true/false/1/0/yes/no, numbers must be numbers; an unknown option is refused in one line."""
    accepted = loader_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{name}: unknown data option {unknown[0]!r}; its loader takes: {', '.join(accepted) or 'none'}")
    hints = typing.get_type_hints(DATASETS[name])
    return {key: _coerce(name, key, value, hints[key]) if key in hints else value for key, value in options.items()}


def load_dataset(name: str, data_dir=None, split: str = "train", **options):
    """(dataset, info) for dataset `name`; options go to that dataset's loader (an unknown one is refused)."""
    options = coerce_options(name, options)
    parts = split.split("+")
    if len(parts) == 1:
        return DATASETS[name](data_dir=data_dir, split=split, **options)
    # "train+val": the splits one after the other, as one split (the published protocol trains on both).
    if "" in parts or len(set(parts)) != len(parts):
        raise UserError(f"{name}: split {split!r} must name different splits joined by '+', e.g. 'train+val'")
    loaded = [DATASETS[name](data_dir=data_dir, split=part, **options) for part in parts]
    ds = loaded[0][0]
    for part_ds, _ in loaded[1:]:
        ds = ds.concatenate(part_ds)
    info = dataclasses.replace(loaded[0][1], split=split, files=sum((i.files for _, i in loaded), ()))
    return ds, info


def load_run_data(model, run_config: dict, name: str, split: str, *, dataset=None, data_dir=None, **options):
    """load_dataset for a trained `model` (evaluate, export): from `data_dir` when a dataset or folder is
    given, else from the folder its run recorded (`run_config`). A recorded folder that is not on this machine
    (a shipped file, a run copied from elsewhere) is refused in one line that names it and --data-dir."""
    given = bool(dataset or data_dir)
    folder = data_dir if given else run_config.get("data_dir")
    if folder and not given and not os.path.isdir(os.path.expanduser(folder)):
        raise UserError(f"{model} was trained on {name} at {folder!r}, which is not here; give --data-dir")
    return load_dataset(name, folder, split, **options)


__all__ = ["DATASETS", "IGNORE", "DatasetInfo", "UserError", "class_pixel_counts", "coerce_options",
           "data_errors_as_user_errors", "explain_data_error", "load_dataset", "load_run_data", "loader_options",
           "parse_option"]
