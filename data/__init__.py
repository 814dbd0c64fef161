"""Datasets: one registry, one contract.

    ds, info = data.load_dataset("camvid", data_dir="path/to/CamVid", split="train")

yields `(image float32 (H, W, 3) in [0, 1], mask int32 (H, W))` with 255 = ignore;
`info` holds class names, colours and the file list. See data/common.py.
"""

import dataclasses
import inspect
import os

# Before TensorFlow is first imported: for `python -m data.verify` this package is imported before the
# module, and TF's C++ warnings about each failed data check would repeat our one-line messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from data import camvid, cityscapes, folder, pets, sample, shapes, stanford, voc  # noqa: E402
from data.common import (IGNORE, DatasetInfo, class_pixel_counts, data_errors_as_user_errors,  # noqa: E402
                         explain_data_error)
from errors import UserError  # noqa: E402

DATASETS = {
    "camvid": camvid.load,
    "cityscapes": cityscapes.load,
    "folder": folder.load,
    "pets": pets.load,
    "sample": sample.load,
    "shapes": shapes.load,
    "stanford": stanford.load,
    "voc": voc.load,
}


def parse_option(text: str):
    """("key", value) from "key=value"; true/false/none, integers and decimals become Python values."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"a data option must be KEY=VALUE, got {text!r}")
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if lowered == "none":
        return key, None
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw


def loader_options(name: str) -> list:
    """The options dataset `name`'s loader takes besides data_dir and split (e.g. voc: aug, cache)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return [p for p in inspect.signature(DATASETS[name]).parameters if p not in ("data_dir", "split")]


def load_dataset(name: str, data_dir=None, split: str = "train", **options):
    """(dataset, info) for dataset `name`; options go to that dataset's loader (an unknown one is refused)."""
    accepted = loader_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"{name}: unknown data option {unknown[0]!r}; its loader takes: {', '.join(accepted) or 'none'}")
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


__all__ = ["DATASETS", "IGNORE", "DatasetInfo", "UserError", "class_pixel_counts", "data_errors_as_user_errors",
           "explain_data_error", "load_dataset", "loader_options", "parse_option"]
