"""Pascal VOC 2012 segmentation (21 classes), optionally with the SBD "aug" labels.

`data_dir` is any of: the folder holding `VOCdevkit/`, `VOCdevkit/` itself, or `VOCdevkit/VOC2012/`.
The VOC2012 folder holds

    JPEGImages/{id}.jpg
    SegmentationClass/{id}.png                   palette PNGs: pixel value = palette index = class,
                                                 255 = object border / difficult (ignored)
    ImageSets/Segmentation/{train,val,trainval}.txt   one image id per line

With `aug=True` the labels come from the SBD-augmented set (10,582 training images), unpacked
into the same VOC2012 folder:

    SegmentationClassAug/{id}.png                single-channel PNGs with the same values 0..20, 255
    ImageSets/SegmentationAug/{train_aug,val}.txt    if present; else ImageSets/Segmentation/*.txt

A list line may be a bare id or `IMAGE_PATH LABEL_PATH` (as in the widely copied `train_aug.txt`);
only the stem of the first entry is used.

Palette indices are read with PIL: `tf.io.decode_png` would expand the palette to colours. Masks
may also be single-channel ('L') PNGs holding the indices (e.g. DeepLab's `SegmentationClassRaw`);
an RGB mask stops with an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

from segkit.data.common import (IGNORE, DatasetInfo, pair_files, check_split, from_pairs, read_image, read_index_mask, remap,
                         require_dir, value_lut)
from segkit.errors import UserError

HOMEPAGE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
EXPECTED = ("VOCdevkit/VOC2012/ with JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt "
            "(data dir may be the folder holding VOCdevkit/, VOCdevkit/ or VOC2012/)")

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")


def voc_colormap(n: int = 256) -> tuple:
    """The VOC palette: the bits of index i are spread over r, g, b from the high bit down."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


COLORS = voc_colormap(len(CLASSES))
# Stored values are the class indices 0..20; 255 (borders and "difficult" regions) is ignored.
LUT = value_lut({**{i: i for i in range(len(CLASSES))}, 255: IGNORE})


def find_root(data_dir) -> Path:
    """The VOC2012 folder inside (or equal to) `data_dir`."""
    base = require_dir(data_dir, "voc", EXPECTED, HOMEPAGE)
    for root in (base / "VOCdevkit" / "VOC2012", base / "VOC2012", base):
        if (root / "JPEGImages").is_dir():
            return root
    raise UserError(f"voc: no JPEGImages/ in {base}, {base / 'VOC2012'} or {base / 'VOCdevkit' / 'VOC2012'}; "
                    f"expected {EXPECTED} (download: {HOMEPAGE})")


def _layout(root: Path, aug: bool):
    """(mask folder, folder of split lists) for the plain or the SBD-augmented labels."""
    if not aug:
        masks, lists = root / "SegmentationClass", root / "ImageSets" / "Segmentation"
    else:
        masks = root / "SegmentationClassAug"
        lists = root / "ImageSets" / "SegmentationAug"
        if not lists.is_dir():
            lists = root / "ImageSets" / "Segmentation"
    for folder in (masks, lists):
        if not folder.is_dir():
            raise UserError(f"voc: {folder} does not exist; expected {EXPECTED}"
                            + (" plus SegmentationClassAug/ (SBD labels) for aug=True" if aug else "")
                            + f" (download: {HOMEPAGE})")
    return masks, lists


def splits(data_dir=None, aug: bool = False) -> list:
    """The split names found in `data_dir` (the .txt lists of the chosen label set)."""
    _, lists = _layout(find_root(data_dir), aug)
    return sorted(p.stem for p in lists.glob("*.txt"))


def _read_ids(listing: Path) -> list:
    ids = []
    for line in listing.read_text().splitlines():
        if line.strip():
            # "2007_000032" or "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png"
            ids.append(Path(line.split()[0]).stem)
    return ids


def load(data_dir=None, split: str = "train", aug: bool = False, cache: bool | None = None):
    """Load VOC 2012 `split` in the order of its list file.

    aug: take labels from SegmentationClassAug/ (SBD) and lists from ImageSets/SegmentationAug/
        when that folder exists (splits train_aug, val).
    cache: keep decoded frames in memory; default True, but False with `aug` (10,582 frames, ~6 GB).
    """
    root = find_root(data_dir)
    mask_dir, lists = _layout(root, aug)
    check_split(split, {p.stem for p in lists.glob("*.txt")}, "voc", lists)
    pairs = pair_files("voc", [root / "JPEGImages" / f"{image_id}.jpg" for image_id in _read_ids(lists / f"{split}.txt")],
                       lambda image: mask_dir / f"{image.stem}.png", f"{lists / (split + '.txt')} lists no images",
                       listed_in=lists / f"{split}.txt")

    def decode(image_path, mask_path):
        return read_image(image_path), remap(read_index_mask(mask_path, ("P", "L")), LUT, mask_path)

    info = DatasetInfo("voc", CLASSES, COLORS, split=split, files=tuple(pairs), homepage=HOMEPAGE)
    return from_pairs(pairs, decode, cache=not aug if cache is None else cache), info
