"""The dataset contract and the small functions every layout is built from.

Every loader returns `(dataset, info)`: a `tf.data.Dataset` of
`(image float32 (H, W, 3) in [0, 1], mask int32 (H, W))` at the files' own
resolution, in a fixed order, where ignored pixels carry `IGNORE` (255), and a
`DatasetInfo` with the class names and colours.

Files are decoded with TensorFlow's own decoders in parallel. Problems in the data
are caught inside the graph with `tf.debugging.Assert` carrying a message that names
the file; `explain_data_error` turns the resulting TensorFlow error into one line
for the user (and finds the unreadable file when the decoder itself failed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from segkit.errors import UserError

IGNORE = 255
AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# Marker that tags our in-graph data checks so their messages can be found again
# inside TensorFlow's error text.
_MARK = "SEGKIT-DATA-ERROR"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a picture need to know about a dataset."""

    name: str
    class_names: tuple
    colors: tuple  # one (r, g, b) per class, for drawing
    split: str = "train"
    ignore_index: int = IGNORE
    files: tuple = ()  # (image_path, mask_path) pairs; empty for generated data
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
            "split": self.split,
            "num_images": len(self.files),
        }


def default_colors(num_classes: int, seed: int = 7) -> tuple:
    """Distinct-enough colours for datasets that define none (class 0 black)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(num_classes, 3))
    colors[0] = 0
    return tuple(tuple(int(v) for v in c) for c in colors)


def require_dir(path, dataset: str, expected: str, homepage: str = "") -> Path:
    """Return `path` as a Path, or raise a UserError saying what layout was expected."""
    if path is None:
        raise UserError(f"{dataset}: --data-dir is required; expected {expected}"
                        + (f" (download: {homepage})" if homepage else ""))
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{dataset}: data dir {str(path)!r} does not exist or is not a folder; "
                        f"expected {expected}" + (f" (download: {homepage})" if homepage else ""))
    return path


def check_split(split: str, available, dataset: str, where) -> None:
    if split not in available:
        raise UserError(f"{dataset}: no split {split!r} in {where} (found: {', '.join(sorted(available)) or 'none'})")


def pair_files(dataset: str, images, mask_of, nothing: str, listed_in: Path | None = None) -> list:
    """[(image, mask)] for `images` (paths, in their order) and `mask_of(image)`, the one pairing loop of the
    loaders. A missing mask is named with its image; with `listed_in` (a list file naming the pairs) a missing
    image is named too. No pair at all raises `nothing`.
    """
    pairs = []
    for image in images:
        mask = mask_of(image)
        for path in ((image, mask) if listed_in else (mask,)):
            if not path.is_file():
                raise UserError(f"{dataset}: {path} is listed in {listed_in} but does not exist" if listed_in
                                else f"{dataset}: image {image} has no mask {mask}")
        pairs.append((image, mask))
    if not pairs:
        raise UserError(f"{dataset}: {nothing}")
    return pairs


def list_images(folder: Path) -> list:
    """The image files in `folder`, sorted; a link to nothing is named, not silently dropped."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.is_symlink() and not path.exists():
            raise UserError(f"{path} is a link to {os.readlink(path)}, which does not exist")
        if path.is_file():
            found.append(path)
    return found


# ---------------------------------------------------------------------------
# Reading files (graph functions; arguments are scalar string tensors)


def read_image(path) -> tf.Tensor:
    """Decode a PNG/JPEG/BMP/GIF file to uint8 (H, W, 3)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR byte 25): 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGB + alpha.
PNG_PALETTE, PNG_COLOUR_TYPES = 3, (2, 6)


def png_header(path) -> tuple | None:
    """(bit depth, colour type) from a PNG file's IHDR, or None for a file that is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE):
        return None
    return head[24], head[25]


def read_mask(path) -> tf.Tensor:
    """Decode a single-channel label PNG to int32 (H, W) holding the stored values, whatever their width.

    8-bit grey: the values. 16-bit grey: the values (0..65535; `remap` refuses those the dataset does not
    define), not the top 8 bits that an 8-bit decode would give (labels 0..255 stored in 16 bits would all
    read as 0). 1-, 2- and 4-bit grey: the stored sample values, not the decoder's 0..255 scaling. A palette
    PNG: its palette indices (what label tools store), not grey levels of the palette colours. An RGB(A)
    PNG is refused with a line naming the file: its colours are not class values. Other formats are
    decoded as 8-bit grey.
    """
    contents = tf.io.read_file(path)
    head = tf.strings.join([tf.strings.substr(contents, 0, 26), tf.constant(b"\0" * 26)])
    is_png = tf.equal(tf.strings.substr(head, 0, 8), PNG_SIGNATURE)
    ihdr = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 24, 2), tf.uint8), tf.int32)
    depth = tf.where(is_png, ihdr[0], 8)
    colour = tf.where(is_png, ihdr[1], 0)
    is_colour = tf.reduce_any(tf.equal(colour, PNG_COLOUR_TYPES))
    message = tf.strings.format("mask {} is a colour (RGB) PNG; expected one class value per pixel (a grey "
                                "or palette PNG, as the dataset stores its labels)", path)

    def grey():
        values = tf.cast(tf.io.decode_png(contents, channels=1, dtype=tf.uint8)[..., 0], tf.int32)
        # the decoder scales 1-, 2- and 4-bit samples to 0..255 (by 255, 85, 17): undo it
        step = tf.where(depth < 8, 255 // (tf.bitwise.left_shift(1, tf.minimum(depth, 7)) - 1), 1)
        return values // step

    def wide():
        return tf.cast(tf.io.decode_png(contents, channels=1, dtype=tf.uint16)[..., 0], tf.int32)

    def palette():
        return read_index_mask(path, ("P",))

    branch = tf.where(colour == PNG_PALETTE, 2, tf.where(depth == 16, 1, 0))
    with tf.control_dependencies([data_check(tf.logical_not(is_colour), message)]):
        mask = tf.switch_case(branch, [grey, wide, palette])
    mask.set_shape([None, None])
    return mask


def read_color_mask(path) -> tf.Tensor:
    """Decode an RGB colour-coded label image to int32 (H, W) codes r*65536 + g*256 + b."""
    rgb = tf.cast(tf.io.decode_png(tf.io.read_file(path), channels=3), tf.int32)
    return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]


def value_lut(mapping: dict, size: int = 256, offset: int = 0) -> np.ndarray:
    """A lookup table for `remap`: stored value -> class index, -1 where the value is not allowed.

    Entry `k` is for stored value `k + offset`; give the same `offset` to `remap` (e.g. -1 for
    label files that store "unknown" as -1).
    """
    lut = np.full(size, -1, np.int32)
    for value, index in mapping.items():
        lut[value - offset] = index
    return lut


def remap(raw, lut, mask_path, what: str = "label values", offset: int = 0):
    """Map stored label values through `lut`; a value the dataset does not define stops the
    pipeline with an error naming the file and the offending values."""
    lut = tf.constant(lut, tf.int32)
    position = raw - offset
    in_range = tf.logical_and(position >= 0, position < tf.shape(lut)[0])
    mapped = tf.where(in_range, tf.gather(lut, tf.clip_by_value(position, 0, tf.shape(lut)[0] - 1)), -1)
    bad = tf.unique(tf.boolean_mask(raw, mapped < 0))[0]
    message = tf.strings.format("mask {} has " + what + " outside the dataset's classes: {}",
                                (mask_path, tf.sort(bad)), summarize=20)
    with tf.control_dependencies([tf.debugging.Assert(tf.size(bad) == 0, [_MARK, message, _MARK])]):
        return tf.identity(mapped)


def data_check(condition, message) -> tf.Operation:
    """An in-graph check; when `condition` is false `explain_data_error` reports `message` (a string tensor)."""
    return tf.debugging.Assert(condition, [_MARK, message, _MARK])


def _pil_index_mask(path, modes):
    """(int32 (H, W) stored values, "") read with PIL, or (empty, reason) when that is not possible."""
    from PIL import Image

    path = (path.item() if isinstance(path, np.ndarray) else path).decode()  # bytes (graph) or a 0-d array (eager)
    modes = [m.decode() for m in modes]
    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                return (np.zeros((0, 0), np.int32),
                        f'mask "{path}" is a {im.mode!r} image; expected single-channel class indices '
                        f"(PIL mode {' or '.join(map(repr, modes))})")
            # For palette ('P') images these are the palette indices, not the colours.
            return np.asarray(im).astype(np.int32), ""
    except Exception as exc:  # PIL raises many types for bad files; we only report the reason
        return np.zeros((0, 0), np.int32), f'cannot read mask "{path}": {exc or type(exc).__name__}'


def read_index_mask(path, modes=("P", "L")) -> tf.Tensor:
    """Decode a label image with PIL to int32 (H, W) holding the stored values.

    Unlike `read_mask`, a palette PNG gives its palette indices (`tf.io.decode_png` expands the
    palette to colours). A file in another PIL mode than `modes`, or one PIL cannot read, stops the
    pipeline with an error naming the file.
    """
    mask, problem = tf.numpy_function(_pil_index_mask, [path, tf.constant(modes)], [tf.int32, tf.string],
                                      stateful=False)
    with tf.control_dependencies([data_check(tf.equal(problem, ""), problem)]):
        mask = tf.identity(mask)
    mask.set_shape([None, None])
    return mask


def remap_colors(codes, colors: dict, mask_path):
    """Map colour codes (from `read_color_mask`) to class indices with a hash table."""
    keys = tf.constant([r * 65536 + g * 256 + b for (r, g, b) in colors], tf.int32)
    values = tf.constant(list(colors.values()), tf.int32)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)
    mapped = table.lookup(codes)
    bad = tf.unique(tf.boolean_mask(codes, mapped < 0))[0]
    bad_rgb = tf.stack([bad // 65536, bad // 256 % 256, bad % 256], axis=-1)
    message = tf.strings.format("mask {} has colours not in the class list (r, g, b): {}",
                                (mask_path, bad_rgb), summarize=10)
    with tf.control_dependencies([tf.debugging.Assert(tf.size(bad) == 0, [_MARK, message, _MARK])]):
        return tf.identity(mapped)


def check_same_size(image, mask, image_path, mask_path):
    """Stop with a message naming both files when a mask does not fit its image."""
    ishape, mshape = tf.shape(image), tf.shape(mask)
    same = tf.reduce_all(tf.equal(ishape[:2], mshape[:2]))
    message = tf.strings.format("mask {} is {}x{} but its image {} is {}x{}",
                                (mask_path, mshape[0], mshape[1], image_path, ishape[0], ishape[1]))
    with tf.control_dependencies([tf.debugging.Assert(same, [_MARK, message, _MARK])]):
        return tf.identity(image), tf.identity(mask)


def to_float(image, mask):
    return tf.image.convert_image_dtype(image, tf.float32), tf.cast(mask, tf.int32)


def evenly_spaced(total: int, count: int) -> set:
    """Indices of `count` items spread evenly over 0 .. total - 1 (all of them when total <= count);
    empty when `total` is unknown (negative) or zero."""
    if total <= 0 or count <= 0:
        return set()
    return set(np.linspace(0, total - 1, count).round().astype(int).tolist())


# (num_shards, index, record) inside `shard_files`, else None.
_file_shard = None


@contextlib.contextmanager
def shard_files(num_shards: int, index: int):
    """Inside this block, `from_pairs` keeps only the pairs index, index + num_shards, ... of its list,
    before decoding, so each of `num_shards` training workers decodes its own files (tf.data's DATA
    auto-shard would decode every file on every worker and keep a share of the results).

    Yields a list that gets the full pair count of each dataset sharded: empty afterwards means the
    loader had no file list to shard (generated or tfds data), and the caller must shard otherwise.
    A list shorter than `num_shards` is not sharded (a worker would get no file).
    """
    global _file_shard
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index}")
    record = []
    previous, _file_shard = _file_shard, (num_shards, index, record)
    try:
        yield record
    finally:
        _file_shard = previous


def from_pairs(pairs, decode_pair, cache: bool = True, source: str = "") -> tf.data.Dataset:
    """Dataset of (image float32 [0,1], mask int32) from (image_path, mask_path) pairs.

    `source` says where the pairs were looked for, for the error when there are none: the dataset, the
    split and the list file or folder, e.g. "camvid split 'train' (data/camvid/train.txt)".

    `decode_pair(image_path, mask_path) -> (uint8 image, int32 mask)` does the reading and
    label mapping; the size check is added here. Decoded uint8 frames are cached in memory
    (a quarter of the float32 size) when `cache` is true. Inside `shard_files` only this
    worker's share of the pairs is read.
    """
    if not pairs:
        raise UserError(f"no image/mask pairs found for {source or 'this dataset'}; "
                        "check the list file or folder, or choose another split")
    images = [str(i) for i, _ in pairs]
    masks = [str(m) for _, m in pairs]

    def load(image_path, mask_path):
        image, mask = decode_pair(image_path, mask_path)
        return check_same_size(image, mask, image_path, mask_path)

    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if _file_shard is not None and len(pairs) >= _file_shard[0]:
        num_shards, index, record = _file_shard
        ds = ds.shard(num_shards, index)
        record.append(len(pairs))
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    return ds.map(to_float, num_parallel_calls=AUTOTUNE, deterministic=True)


# ---------------------------------------------------------------------------
# Turning TensorFlow's errors about data into one line


# The formats TensorFlow's decode_image reads (what the pipelines decode with); PIL reads more (TIFF, ...).
TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


def _readable(path: str) -> str | None:
    """None if the file decodes as the pipelines decode it, else the reason it cannot: PIL reads it fully, and
    it is in a format TensorFlow's decode_image takes (a TIFF saved as .jpg decodes in PIL, not in TensorFlow)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            kind = im.format
        if kind not in TF_FORMATS:
            return f"it holds a {kind} image, which TensorFlow does not decode (save it as PNG or JPEG)"
        return None
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # PIL raises many types for bad files; we only report the reason
        return str(exc) or type(exc).__name__


def find_unreadable(files) -> str | None:
    """The first image file of `files` ((image, mask) pairs) that cannot be decoded, as a message.

    Files that are not images (e.g. text label files) are skipped: their readers name them.
    """
    for pair in files:
        for path in pair:
            if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            reason = _readable(str(path))
            if reason is not None:
                return f"cannot read {path}: {reason}"
    return None


def explain_data_error(error: Exception, info: DatasetInfo | None = None) -> str | None:
    """One line for a TensorFlow error raised while reading data, or None if it is not about data."""
    text = str(getattr(error, "message", error))
    # tf.debugging.Assert prints its data as `[MARK] [message] [MARK]` inside a graph (tf.data), and as
    # `b'MARK'\nb'message'\nb'MARK'` when run eagerly, with quotes escaped.
    found = (re.search(re.escape(_MARK) + r"\]\s*\[(.*)\]\s*\[" + re.escape(_MARK), text, re.S)
             or re.search(re.escape(_MARK) + r"'\s*b['\"](.*)['\"]\s*b'" + re.escape(_MARK), text, re.S))
    if found:
        return found.group(1).replace('\\"', '"').replace("\\'", "'").replace("\n", " ").strip()
    # Only an error that looks like a failed read is worth reading every file again for (an out-of-memory
    # error, say, is not about the data).
    decode_words = ("decode", "Decode", "Input is empty", "PNG", "JPEG", "BMP", "GIF", "image", "Uncompress",
                    "corrupt", "No such file", "Unknown image file format")
    if not any(word in text for word in decode_words):
        return None
    if info is not None and info.files:
        unreadable = find_unreadable(info.files)
        if unreadable:
            return f"{info.name}: {unreadable}"
    if info is None:
        first = text.strip().splitlines()[0]
        return f"data: could not read an image or mask: {first}"
    return None


def mask_class_counts(mask, num_classes: int) -> tf.Tensor:
    """int64 (num_classes,) pixels per class in one mask; ignored pixels are not counted."""
    flat = tf.reshape(mask, [-1])
    flat = tf.boolean_mask(flat, (flat >= 0) & (flat < num_classes))
    return tf.math.bincount(flat, minlength=num_classes, maxlength=num_classes, dtype=tf.int64)


def class_pixel_counts(ds: tf.data.Dataset, num_classes: int) -> np.ndarray:
    """Pixels per class over a dataset of (image, mask); ignored pixels are not counted."""

    def count(_, mask):
        return mask_class_counts(mask, num_classes)

    counts = np.zeros(num_classes, np.int64)
    for c in ds.map(count, num_parallel_calls=AUTOTUNE).as_numpy_iterator():
        counts += c
    return counts


@contextlib.contextmanager
def data_errors_as_user_errors(*infos):
    """Inside this block, a TensorFlow error caused by the data of `infos` becomes a UserError."""
    try:
        yield
    except tf.errors.OpError as exc:
        for info in infos:
            message = explain_data_error(exc, info)
            if message is not None:
                raise UserError(message) from None
        raise
