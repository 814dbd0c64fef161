"""Pictures of masks: colour masks, overlays, stitched rows with a legend, training curves.

Everything works on NumPy arrays (uint8 RGB images, int masks) and PIL, so it is cheap
enough to call every epoch; matplotlib is used only for the curves. Files are written through
`fileio.atomic_path`, so a picture is never seen half-written.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segkit.fileio import atomic_path

IGNORE_COLOR = (0, 0, 0)


def palette_array(colors) -> np.ndarray:
    """(256, 3) uint8 lookup: class index -> colour; every other value (255 = ignore) -> black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8)
    lut[len(colors):] = IGNORE_COLOR
    return lut


def colorize(mask, colors) -> np.ndarray:
    """int mask (H, W) -> uint8 RGB (H, W, 3)."""
    return palette_array(colors)[np.clip(np.asarray(mask), 0, 255).astype(np.uint8)]


def to_uint8(image) -> np.ndarray:
    """float image in [0, 1] (or uint8) -> uint8 RGB."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def overlay(image, mask, colors, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend class colours over the image; ignored pixels keep the image."""
    image = to_uint8(image).astype(np.float32)
    color = colorize(mask, colors).astype(np.float32)
    blend = (1 - alpha) * image + alpha * color
    keep = (np.asarray(mask) == ignore_index)[..., None]
    return np.where(keep, image, blend).round().astype(np.uint8)


def palette_png(mask, colors, path) -> None:
    """Save a mask as a palette PNG: pixel values are the class indices, the palette draws them."""
    im = Image.fromarray(np.asarray(mask).astype(np.uint8), mode="P")
    im.putpalette(palette_array(colors).ravel().tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without sized default fonts
        return ImageFont.load_default()


def legend(class_names, colors, width: int, present=None) -> np.ndarray:
    """A strip of colour boxes and class names, wrapped to `width` pixels."""
    names = [(i, n) for i, n in enumerate(class_names) if present is None or i in present]
    font, box, pad = _font(12), 12, 6
    item_w = max([int(_font(12).getlength(n)) for _, n in names] + [10]) + box + 3 * pad
    per_row = max(1, width // item_w)
    rows = max(1, -(-len(names) // per_row))
    strip = Image.new("RGB", (width, rows * (box + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, (i, name) in enumerate(names):
        x, y = pad + (k % per_row) * item_w, pad + (k // per_row) * (box + pad)
        draw.rectangle([x, y, x + box, y + box], fill=tuple(int(c) for c in colors[i]), outline=(0, 0, 0))
        draw.text((x + box + pad, y - 1), name, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def stitch(rows, class_names, colors, titles=("input", "ground truth", "prediction")) -> np.ndarray:
    """Rows of (image, true mask, predicted mask) side by side, with column titles and a legend."""
    tiles = []
    for image, true, pred in rows:
        image = to_uint8(image)
        true_rgb = colorize(true, colors)
        pred_rgb = colorize(pred, colors)
        tiles.append(np.concatenate([image, true_rgb, pred_rgb], axis=1))
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    header = Image.new("RGB", (width, 18), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    col = width // len(titles)
    for k, title in enumerate(titles):
        draw.text((k * col + 4, 2), title, fill=(0, 0, 0), font=_font(13))
    return np.concatenate([np.asarray(header), *tiles, legend(class_names, colors, width)], axis=0)


def save_image(array, path) -> None:
    """Save a uint8 array; the format follows the file name (.png, .jpg)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array)).save(tmp)


def plot_curves(history: list, path) -> None:
    """Loss and mIoU against epoch from history rows (dicts as in history.csv)."""
    from matplotlib.figure import Figure  # not pyplot: leaves a notebook's backend alone

    epochs = [int(r["epoch"]) for r in history]

    def column(key):
        return [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history]

    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_iou = fig.subplots(1, 2)
    ax_loss.plot(epochs, column("loss"), "o-", label="train")
    ax_loss.plot(epochs, column("val_loss"), "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_iou.plot(epochs, column("val_miou"), "o-", color="tab:green", label="val mIoU")
    if any(not np.isnan(v) for v in column("miou")):
        ax_iou.plot(epochs, column("miou"), "o-", color="tab:olive", label="train mIoU")
    ax_iou.set(xlabel="epoch", ylabel="mIoU", title="mean IoU")
    ax_iou.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)


def plot_confusion(cm, class_names, path) -> None:
    """Row-normalised confusion matrix (rows: true class) as a heat map."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm, np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig = Figure(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
