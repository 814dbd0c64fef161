"""Check a dataset before training on it: image counts, class pixels, class weights, bad files.
The `segkit verify` command (segkit/cli/verify.py) prints what this finds:

    segkit verify --dataset voc --data-dir ~/data/VOCdevkit [--split train] [--data-option aug=true]

For every split found in the data dir (or the one given) this prints the number of images, the
pixels of each class (count and percent of the labelled pixels; ignored pixels on their own line),
median-frequency class weights (`losses.class_weights_from_counts`), and every file that cannot be
read or does not fit the dataset, one line each: all files are read, not only up to the first
problem. `--data-option KEY=VALUE` passes a loader option (read as the loader declares it).

Exit status: 0 when no problem was found, 1 when some file has a problem, 2 for a usage error.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import numpy as np
import tensorflow as tf

from segkit import data
from segkit.data import DATASETS, load_dataset
from segkit.data.common import (AUTOTUNE, PNG_PALETTE, DatasetInfo, explain_data_error, mask_class_counts,
                         png_header)
from segkit.errors import UserError
from segkit.losses import class_weights_from_counts

PROBED_SPLITS = ("train", "val", "test")  # for loaders without a `splits` function
MAX_ERRORS_IN_A_ROW = 100  # a reader that keeps failing without moving on


@dataclasses.dataclass
class SplitReport:
    info: DatasetInfo
    images: int
    counts: np.ndarray  # pixels per class
    ignored: int  # pixels with a value outside the classes (255)
    problems: list
    notes: list = dataclasses.field(default_factory=list)  # how the masks are stored, when not 8-bit grey


def loader_options(name: str, options: dict) -> dict:
    """`options` checked against the loader's parameters, with caching off unless asked for."""
    options = data.coerce_options(name, options)
    accepted = data.loader_options(name)
    # One pass over the data: an in-memory cache would only cost memory.
    return {"cache": False, **options} if "cache" in accepted else dict(options)


def find_splits(name: str, data_dir, options: dict) -> list:
    """The splits of dataset `name` present in `data_dir`."""
    module = importlib.import_module(DATASETS[name].__module__)
    splits = getattr(module, "splits", None)
    if splits is not None:
        wanted = inspect.signature(splits).parameters
        return splits(data_dir, **{k: v for k, v in options.items() if k in wanted})
    found, error = [], None
    for split in PROBED_SPLITS:
        try:
            load_dataset(name, data_dir, split, **options)
            found.append(split)
        except UserError as exc:
            error = exc
    if not found:
        raise error
    return found


def describe(error: tf.errors.OpError, info: DatasetInfo, index: int) -> str:
    """One line for the error raised by example `index` of the dataset `info` describes."""
    pair = info.files[index] if index < len(info.files) else None
    one = dataclasses.replace(info, files=(pair,)) if pair else dataclasses.replace(info, files=())
    message = explain_data_error(error, one)
    if message is None:
        text = str(getattr(error, "message", error)).strip()
        message = (text.splitlines() or [type(error).__name__])[0]
    if pair and not any(str(path) in message for path in pair):
        message += f" (image {pair[0]}, mask {pair[1]})"
    return message


def scan_split(name: str, data_dir, split: str, options: dict) -> SplitReport:
    """Read every example of one split, counting class pixels and collecting problems."""
    ds, info = load_dataset(name, data_dir, split, **options)
    num_classes = info.num_classes
    counted = ds.map(lambda image, mask: (mask_class_counts(mask, num_classes), tf.size(mask, tf.int64)),
                     num_parallel_calls=AUTOTUNE, deterministic=True)
    counts, pixels, problems, images, in_a_row = np.zeros(num_classes, np.int64), 0, [], 0, 0
    iterator = iter(counted)
    while True:
        try:
            count, size = next(iterator)
        except StopIteration:
            break
        except tf.errors.OpError as exc:  # the dataset goes on with the next example after a failed one
            problems.append(describe(exc, info, images))
            images, in_a_row = images + 1, in_a_row + 1
            if in_a_row >= MAX_ERRORS_IN_A_ROW:
                problems.append(f"stopped after {in_a_row} failing examples in a row")
                break
            continue
        counts += count.numpy()
        pixels += int(size)
        images, in_a_row = images + 1, 0
    if images > len(problems) and not counts.sum():
        problems.append("no mask has a labelled pixel (every pixel is void / ignored): nothing to learn from")
    return SplitReport(info, images, counts, pixels - int(counts.sum()), problems, mask_notes(info))


def mask_notes(info: DatasetInfo) -> list:
    """One line per kind of PNG mask that is not 8-bit grey (16-bit, palette), with how it is read."""
    kinds = {}
    for _, mask in info.files:
        try:
            header = png_header(mask) if str(mask).lower().endswith(".png") else None
        except OSError:
            continue  # reported as a problem when read
        if header is None:
            continue
        depth, colour = header
        kind = ("palette PNGs (read as their palette indices)" if colour == PNG_PALETTE else
                f"{depth}-bit PNGs (read as their stored values)" if depth != 8 else None)
        if kind:
            kinds.setdefault(kind, []).append(mask)
    return [f"{len(paths)} of {len(info.files)} masks are {kind}, e.g. {paths[0]}" for kind, paths in kinds.items()]


def format_report(name: str, report: SplitReport) -> str:
    counts, labelled = report.counts, int(report.counts.sum())
    weights = class_weights_from_counts(counts) if labelled else [0.0] * len(counts)
    width = max(len("class"), *(len(n) for n in report.info.class_names))
    lines = [f"{name} {report.info.split}: {report.images} images",
             f"  {'class':<{width}}  {'pixels':>12}  {'percent':>8}  {'weight':>7}"]
    for class_name, count, weight in zip(report.info.class_names, counts, weights):
        percent = 100.0 * count / labelled if labelled else 0.0
        lines.append(f"  {class_name:<{width}}  {count:>12d}  {percent:>7.2f}%  {weight:>7.3f}")
    lines.append(f"  {'(ignored)':<{width}}  {report.ignored:>12d}")
    lines += [f"  note: {note}" for note in report.notes]
    if report.problems:
        lines.append(f"  {len(report.problems)} problem(s):")
        lines += [f"  problem: {p}" for p in report.problems]
    else:
        lines.append("  no problems")
    return "\n".join(lines)
