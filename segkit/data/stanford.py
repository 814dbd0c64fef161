"""Stanford Background (Gould et al., ICCV 2009): 715 outdoor scenes, 8 classes.

`data_dir` is `iccv09Data/` or the folder holding it (iccv09Data.tar.gz unpacked):

    iccv09Data/images/{id}.jpg
    iccv09Data/labels/{id}.regions.txt   one line per image row, one integer per pixel:
                                         0..7 = class, -1 = unknown (ignored)

The dataset has no official split. This loader's fixed split: sort the image ids; the id at
sorted position i is in `val` when i % 5 == 4 (every 5th image, 143 of 715), otherwise in
`train` (572). The text masks are parsed inside the graph.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from segkit.data.common import (IGNORE, DatasetInfo, pair_files, check_split, data_check, from_pairs, read_image, remap, require_dir,
                         value_lut)
from segkit.errors import UserError

HOMEPAGE = "http://dags.stanford.edu/projects/scenedataset.html"
EXPECTED = "iccv09Data/images/*.jpg and iccv09Data/labels/*.regions.txt (iccv09Data.tar.gz unpacked)"

CLASSES = ("sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object")
COLORS = ((70, 130, 180), (107, 142, 35), (128, 64, 128), (152, 251, 152), (0, 105, 148), (70, 70, 70),
          (139, 90, 43), (220, 20, 60))
SPLITS = ("train", "val")
# The regions files store classes as 0..7 and "unknown" as -1, which is ignored (255).
LUT = value_lut({-1: IGNORE, **{i: i for i in range(len(CLASSES))}}, size=len(CLASSES) + 1, offset=-1)


def split_of(position: int) -> str:
    """The split of the image at `position` in the sorted id list: every 5th (i % 5 == 4) is val."""
    return "val" if position % 5 == 4 else "train"


def _root(data_dir) -> Path:
    base = require_dir(data_dir, "stanford", EXPECTED, HOMEPAGE)
    for root in (base / "iccv09Data", base):
        if (root / "images").is_dir() and (root / "labels").is_dir():
            return root
    raise UserError(f"stanford: no images/ and labels/ in {base} or {base / 'iccv09Data'}; expected {EXPECTED} "
                    f"(download: {HOMEPAGE})")


def splits(data_dir=None) -> list:
    """The fixed splits (the same for every copy of the dataset)."""
    _root(data_dir)
    return list(SPLITS)


def read_regions(path) -> tf.Tensor:
    """Parse a `.regions.txt` file to int32 (H, W); a malformed file stops with an error naming it."""
    lines = tf.strings.split(tf.strings.strip(tf.io.read_file(path)), "\n")
    tokens = tf.strings.split(tf.strings.strip(lines))  # ragged (H, None), split on whitespace
    lengths = tokens.row_lengths()
    words = tokens.flat_values
    integers = tf.strings.regex_full_match(words, r"-?[0-9]+")
    well_formed = (tf.size(words) > 0) & (tf.reduce_min(lengths) == tf.reduce_max(lengths)) & tf.reduce_all(integers)
    message = tf.strings.format("regions file {} is not a grid of integers (rows of {} to {} values)",
                                (path, tf.reduce_min(lengths), tf.reduce_max(lengths)))
    with tf.control_dependencies([data_check(well_formed, message)]):
        values = tf.strings.to_number(tf.where(integers, words, "0"), tf.int32)
        return tf.reshape(values, [tf.size(lengths), -1])


def load(data_dir=None, split: str = "train", cache: bool = True):
    """Load the fixed `split` ("train" or "val", see the module docstring) in sorted id order."""
    root = _root(data_dir)
    check_split(split, SPLITS, "stanford", root)
    images = [image for position, image in enumerate(sorted((root / "images").glob("*.jpg"), key=lambda p: p.stem))
              if split_of(position) == split]
    pairs = pair_files("stanford", images, lambda image: root / "labels" / f"{image.stem}.regions.txt",
                       f"no images for split {split!r} in {root / 'images'}")

    def decode(image_path, mask_path):
        return read_image(image_path), remap(read_regions(mask_path), LUT, mask_path, offset=-1)

    info = DatasetInfo("stanford", CLASSES, COLORS, split=split, files=tuple(pairs), homepage=HOMEPAGE)
    return from_pairs(pairs, decode, cache=cache), info
