"""Cityscapes fine annotations, mapped to the 19 standard training classes.

`data_dir` holds the two official packages unpacked side by side
(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip):

    leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

The labelIds PNGs store the 34 label ids 0..33; they are mapped to the 19 train ids of
cityscapesScripts' labels.py, every other id to 255 (ignore). The id -1 (license plate) is never
drawn into labelIds PNGs, which are unsigned. The public test labels are all ignore.
"""

from __future__ import annotations

from pathlib import Path

from segkit.data.common import (IGNORE, DatasetInfo, pair_files, check_split, from_pairs, read_image, read_mask, remap, require_dir,
                         value_lut)
from segkit.errors import UserError

HOMEPAGE = "https://www.cityscapes-dataset.com/"
EXPECTED = ("leftImg8bit/{split}/{city}/*_leftImg8bit.png and gtFine/{split}/{city}/*_gtFine_labelIds.png "
            "(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unpacked in one folder)")

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
COLORS = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
          (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
          (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
# label id -> train id (cityscapesScripts labels.py). The ids 0..33 not listed (unlabeled, ego vehicle,
# rectification border, out of roi, static, dynamic, ground, parking, rail track, guard rail, bridge,
# tunnel, polegroup, caravan, trailer) are not evaluated and become 255 (ignore); ids above 33 are errors.
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LUT = value_lut({**{i: IGNORE for i in range(34)}, **TRAIN_IDS})


def _root(data_dir) -> Path:
    root = require_dir(data_dir, "cityscapes", EXPECTED, HOMEPAGE)
    if not ((root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()):
        raise UserError(f"cityscapes: {root} has no leftImg8bit/ and gtFine/; expected {EXPECTED} "
                        f"(download: {HOMEPAGE})")
    return root


def splits(data_dir=None) -> list:
    """The split names with both images and fine labels in `data_dir`."""
    root = _root(data_dir)
    images, labels = root / "leftImg8bit", root / "gtFine"
    return sorted(p.name for p in images.iterdir() if p.is_dir() and (labels / p.name).is_dir())


def load(data_dir=None, split: str = "train", cache: bool = False):
    """Load Cityscapes `split`, sorted by city and frame; `cache` is off by default (~2,975 frames of 2048x1024)."""
    root = _root(data_dir)
    check_split(split, splits(root), "cityscapes", root)
    suffix = "_leftImg8bit.png"
    pairs = pair_files(
        "cityscapes", sorted((root / "leftImg8bit" / split).glob(f"*/*{suffix}")),
        lambda image: root / "gtFine" / split / image.parent.name / (image.name[:-len(suffix)] + "_gtFine_labelIds.png"),
        f"no *{suffix} files in {root / 'leftImg8bit' / split}/{{city}}/")

    def decode(image_path, mask_path):
        return read_image(image_path), remap(read_mask(mask_path), LUT, mask_path, "label ids")

    info = DatasetInfo("cityscapes", CLASSES, COLORS, split=split, files=tuple(pairs), homepage=HOMEPAGE)
    return from_pairs(pairs, decode, cache=cache), info
