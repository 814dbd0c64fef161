"""Any dataset laid out as an image folder and a mask folder.

    data_dir/images/NAME.jpg|png|...  with  data_dir/masks/NAME.png           -> one split, "all"
    data_dir/{split}/images/ ...      with  data_dir/{split}/masks/ ...       -> the splits by folder name
    data_dir/classes.txt              optional, one class name per line (class 0 first)

A mask is the PNG with its image's file stem; an image without one is an error. A flat layout has
one split, "all"; with `val_fraction=F` (train.py's `--val-fraction`) it also has "train" and "val":
every round(1/F)-th image, in file-name order, is held out for "val" and the rest is "train". Masks hold one
value per pixel (PIL modes L, P (palette indices), I;16, I or 1). What the values mean is decided
once from the masks of all splits, so every split gets the same mapping:

- binary: with `binary=True`, or by default when every mask holds only 0 and 255: 0 -> class 0,
  255 -> class 1 (2 classes; 255 is foreground here, not ignore).
- `remap=True`: the values found, except 255 (ignore), in increasing order -> 0..K-1; e.g. masks
  holding {3, 7, 9} give classes 0, 1, 2.
- otherwise the values are class indices 0..K-1 and 255 is ignore, with K = `num_classes`, else the
  number of names in classes.txt, else the largest value found + 1.

Finding values reads every mask once with PIL; pass `binary=False` with `num_classes` (or a
classes.txt) to skip that on large datasets. Class names come from classes.txt, else
"background", "foreground" for binary masks, else "class0", "class1", ... Colour (RGB) masks are not
supported: convert them to class indices first.
"""

from __future__ import annotations


import numpy as np

from segkit.data.common import (IGNORE, DatasetInfo, pair_files, check_split, default_colors, from_pairs, list_images, read_image,
                         read_index_mask, require_dir, value_lut)
from segkit.data.common import remap as remap_labels  # `load` has an option named `remap`
from segkit.errors import UserError

EXPECTED = "images/ and masks/ (NAME.png per image), or {split}/images/ and {split}/masks/ for each split"
MASK_MODES = ("L", "P", "I;16", "I", "1")
FLAT_SPLIT = "all"


def _split_dirs(data_dir):
    """(data_dir as a Path, {split name: folder holding images/ and masks/})."""
    root = require_dir(data_dir, "folder", EXPECTED)
    found = {p.name: p for p in sorted(root.iterdir()) if (p / "images").is_dir() and (p / "masks").is_dir()}
    if (root / "images").is_dir() and (root / "masks").is_dir():
        found[FLAT_SPLIT] = root
    if not found:
        raise UserError(f"folder: {root} has no images/ and masks/ folders; expected {EXPECTED}")
    return root, found


def splits(data_dir=None) -> list:
    """The split names found in `data_dir` ("all" for a top-level images/ + masks/)."""
    return sorted(_split_dirs(data_dir)[1])


def mask_value_counts(paths) -> dict:
    """{value: (pixels, masks)} over the masks at `paths`: every stored value, how many pixels hold it and in
    how many masks; files PIL cannot read are skipped (decoding names them)."""
    from PIL import Image

    counts = {}
    for path in paths:
        try:
            with Image.open(path) as im:
                if im.mode not in MASK_MODES:
                    continue
                array = np.asarray(im)
        except Exception:  # reported with the file name when the pipeline reads it
            continue
        values, pixels = np.unique(array.astype(np.int64).ravel(), return_counts=True)
        for value, count in zip(values.tolist(), pixels.tolist()):
            total, masks = counts.get(value, (0, 0))
            counts[value] = (total + count, masks + 1)
    return counts


def mask_values(paths) -> set:
    """Every value stored in the masks at `paths`."""
    return set(mask_value_counts(paths))


STRAY_SHARE = 1e-3  # a value with fewer pixels than this share of the labelled ones is not a class of its own


def stray_values(counts: dict) -> list:
    """The values of `counts` (mask_value_counts) other than 255 that hold almost no pixels: under STRAY_SHARE
    of all mask pixels, beside values that hold the rest. Anti-aliased edges of 0/255 masks, JPEG artefacts
    saved into PNG masks and brush slips look like this."""
    total = sum(pixels for pixels, _ in counts.values())
    return sorted(v for v, (pixels, _) in counts.items() if v != IGNORE and pixels < STRAY_SHARE * total)


def _describe_strays(counts: dict, strays: list) -> str:
    shown = ", ".join(f"{v} ({counts[v][0]} pixels in {counts[v][1]} mask{'s' if counts[v][1] > 1 else ''})"
                      for v in strays[:6])
    return shown + (f" and {len(strays) - 6} more" if len(strays) > 6 else "")


def _class_mapping(split_dirs: dict, names, binary, num_classes, remap_values: bool):
    """(stored value -> class index, number of classes, binary?) for the options given."""
    if binary and remap_values:
        raise UserError("folder: binary=True and remap=True exclude each other")
    known = num_classes if num_classes is not None else (len(names) if names else None)
    values = None
    if binary is None or remap_values or known is None:
        counts = mask_value_counts(p for d in dict.fromkeys(split_dirs.values())  # a folder once, whatever splits share it
                                   for p in sorted((d / "masks").glob("*.png")))
        values = set(counts)
        strays = stray_values(counts)
        if strays and binary is None and known is None and not remap_values:
            # The classes would be read off the values: a handful of stray ones would each become a class with
            # almost no pixels (0/255 masks with a few anti-aliased 128s made 129 classes before).
            main = sorted(set(counts) - set(strays))
            hint = ("they look like 0/255 masks with anti-aliased edges: threshold them to 0 and 255"
                    if set(main) <= {0, IGNORE} else "fix those pixels")
            raise UserError(f"folder: mask values {_describe_strays(counts, strays)} hold under "
                            f"{STRAY_SHARE:.1%} of the mask pixels each, beside {', '.join(map(str, main))}; read "
                            f"as class indices they make {max(set(counts) - {IGNORE}) + 1} classes, some with almost "
                            f"no pixels; {hint}, or say what the values are (num_classes=K, classes.txt or remap=true)")
    if binary is None:
        binary = not remap_values and known in (None, 2) and IGNORE in values and values <= {0, IGNORE}
    if binary:
        # 0/255 masks: 255 is the foreground here, not ignore.
        return {0: 0, IGNORE: 1}, 2, True
    if remap_values:
        # Whatever values occur become 0..K-1 in increasing order; 255 keeps meaning ignore.
        found = sorted(values - {IGNORE})
        return {**{v: i for i, v in enumerate(found)}, IGNORE: IGNORE}, len(found), False
    if known is None:
        labels = values - {IGNORE}
        if not labels:
            raise UserError("folder: the masks hold no class values; pass num_classes")
        known = max(labels) + 1
    # Stored values are the class indices; 255 is ignore.
    return {**{i: i for i in range(known)}, IGNORE: IGNORE}, known, False


def load(data_dir=None, split: str = "train", binary: bool | None = None, num_classes: int | None = None,
         remap: bool = False, cache: bool = True, val_fraction: float | None = None):
    """Load `split` (a subfolder name, or "all" for a flat layout), images in file-name order.

    val_fraction: for a flat layout, also offer "train" and "val" (see the module docstring).
    binary: True for 0/255 masks, False for index masks, None (default) to decide from the masks.
    num_classes: K when masks hold indices 0..K-1 (default: classes.txt, else the largest value + 1).
    remap: map the values that occur to 0..K-1 in increasing order (see the module docstring).
    """
    root, split_dirs = _split_dirs(data_dir)
    held_out = None
    if val_fraction is not None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise UserError(f"folder: val_fraction must be a number between 0 and 1, got {val_fraction!r}")
        if set(split_dirs) != {FLAT_SPLIT}:
            raise UserError(f"folder: {root} has its own splits ({', '.join(sorted(split_dirs))}); val_fraction "
                            "applies to a flat images/ + masks/ layout")
        held_out = split
        split_dirs = {**split_dirs, "train": root, "val": root}
    elif set(split_dirs) == {FLAT_SPLIT} and split in ("train", "val"):
        raise UserError(f"folder: {root} holds one flat split ('all'); pass --val-fraction F (e.g. 0.1) to hold "
                        f"out every 1/F-th image for 'val' and train on the rest")
    check_split(split, split_dirs, "folder", root)
    names_file = root / "classes.txt"
    names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()] \
        if names_file.is_file() else []
    if num_classes is not None and (not isinstance(num_classes, int) or not 1 <= num_classes <= 255):
        raise UserError(f"folder: num_classes must be an integer in 1..255, got {num_classes!r}")
    if names and num_classes is not None and len(names) != num_classes:
        raise UserError(f"folder: {names_file} names {len(names)} classes but num_classes={num_classes}")

    mapping, count, is_binary = _class_mapping(split_dirs, names, binary, num_classes, remap)
    if count > 255:
        raise UserError(f"folder: {count} classes found; at most 255 are possible (255 is ignore)")
    if num_classes is not None and count != num_classes:
        raise UserError(f"folder: the masks give {count} classes but num_classes={num_classes}")
    if names and len(names) != count:
        raise UserError(f"folder: {names_file} names {len(names)} classes but the masks give {count}")
    if not names:
        names = ["background", "foreground"] if is_binary else [f"class{i}" for i in range(count)]

    folder = split_dirs[split]
    pairs = pair_files("folder", list_images(folder / "images"), lambda image: folder / "masks" / f"{image.stem}.png",
                       f"no images in {folder / 'images'}")
    if held_out in ("train", "val"):
        every = max(2, round(1 / val_fraction))
        pairs = [p for k, p in enumerate(pairs) if (k % every == every - 1) == (held_out == "val")]
        if not pairs:
            raise UserError(f"folder: val_fraction={val_fraction} leaves no '{held_out}' images of "
                            f"{len(list_images(folder / 'images'))}")
    lut = value_lut(mapping, size=max(256, max(mapping) + 1))

    def decode(image_path, mask_path):
        return read_image(image_path), remap_labels(read_index_mask(mask_path, MASK_MODES), lut, mask_path)

    info = DatasetInfo("folder", tuple(names), default_colors(count), split=split, files=tuple(pairs))
    return from_pairs(pairs, decode, cache=cache), info

