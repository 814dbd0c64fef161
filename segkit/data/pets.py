"""Oxford-IIIT Pet (Parkhi et al. 2012) through tensorflow-datasets, as 3-class segmentation.

The data must already be prepared by tfds in `data_dir` (default: tfds' own, ~/tensorflow_datasets):
`tfds build oxford_iiit_pet --data_dir DIR` on a machine with internet, then copy DIR. Nothing is
downloaded here. Splits: `train` = tfds' `train[:90%]` (3,312), `val` = `train[90%:]` (368, held out
from training so that the default settings of train.py have a validation split), `test` = tfds' `test`
(3,669); any tfds slice of tfds' own `train` / `test` is accepted too, e.g. `train[:50%]`.

The trimap (`segmentation_mask`, (H, W, 1)) stores 1 = pet, 2 = background, 3 = border. It is mapped to
0 = background, 1 = pet, 2 = border (background first, as in the other datasets here; the Keras
tutorial's `trimap - 1` would make the pet class 0).
"""

from __future__ import annotations

import re

import tensorflow as tf

from segkit.data.common import AUTOTUNE, DatasetInfo, check_same_size, remap, require_dir, to_float, value_lut
from segkit.errors import UserError

HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
TFDS_NAME = "oxford_iiit_pet"
CLASSES = ("background", "pet", "border")
COLORS = ((0, 0, 0), (220, 20, 60), (255, 255, 255))
SPLITS = ("train", "val", "test")
# Our split names -> tfds' (tfds has no validation split; the last 10% of its train split is ours).
TFDS_SPLITS = {"train": "train[:90%]", "val": "train[90%:]", "test": "test"}
# trimap 1 (pet) -> 1, 2 (background) -> 0, 3 (border, the uncertain outline) -> 2 kept as its own class.
LUT = value_lut({1: 1, 2: 0, 3: 2})


def splits(data_dir=None) -> list:
    """The split names (see the module docstring)."""
    return list(SPLITS)


def _check_split(split: str) -> None:
    # Each "+"-joined part is a split name, optionally with a tfds slice: "train[:90%]+test".
    names = [re.sub(r"\[[^\]]*\]$", "", part.strip()) for part in split.split("+")]
    if not all(name in SPLITS and (name != "val" or part.strip() == "val")
               for name, part in zip(names, split.split("+"))):
        raise UserError(f"pets: no split {split!r} (found: {', '.join(SPLITS)}; tfds slices such as "
                        f"'train[:90%]' are accepted)")


def decode(example):
    """(uint8 image, int32 mask) from one tfds example, with the trimap mapped to the 3 classes."""
    name = example["file_name"]
    mask = remap(tf.cast(example["segmentation_mask"][..., 0], tf.int32), LUT, name, "trimap values")
    return check_same_size(example["image"], mask, name, name)


def load(data_dir=None, split: str = "train", cache: bool = False):
    """Load the prepared tfds `oxford_iiit_pet` split in tfds' order (no shuffling)."""
    import tensorflow_datasets as tfds  # slow to import; only this loader needs it

    if data_dir is not None:
        data_dir = str(require_dir(data_dir, "pets", f"a tfds data dir holding {TFDS_NAME}/", HOMEPAGE))
    _check_split(split)
    try:
        tfds_split = "+".join(TFDS_SPLITS.get(part.strip(), part.strip()) for part in split.split("+"))
        ds = tfds.load(TFDS_NAME, split=tfds_split, data_dir=data_dir, download=False, shuffle_files=False)
    except AssertionError:  # tfds' way of saying the prepared files are not there
        raise UserError(f"pets: {TFDS_NAME} is not prepared in {data_dir or 'the default tfds data dir'}; run "
                        f"`tfds build {TFDS_NAME} --data_dir DIR` on a machine with internet and copy DIR here "
                        f"(dataset: {HOMEPAGE})") from None
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    ds = ds.map(to_float, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds, DatasetInfo("pets", CLASSES, COLORS, split=split, homepage=HOMEPAGE)
