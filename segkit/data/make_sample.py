"""Rebuild the bundled sample (segkit/data/sample/camvid) from the full CamVid SegNet split.

    python -m segkit.data.make_sample --src ../shared/datasets/camvid

Takes evenly spaced frames (so every sequence is represented), halves their size
(images with area averaging, saved as JPEG quality 90; labels with nearest neighbour,
saved as PNG) and writes the SegNet layout, so the `camvid` loader reads it unchanged.
The same source always gives the same files.
"""

import argparse
import shutil
from pathlib import Path

from PIL import Image

DEFAULT_OUT = Path(__file__).resolve().parent / "sample" / "camvid"


def pick(lines, count):
    step = len(lines) / count
    return [lines[int(i * step)] for i in range(count)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="CamVid SegNet folder (train/, trainannot/, train.txt ...)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--train", type=int, default=96, help="frames taken from the train split")
    parser.add_argument("--val", type=int, default=32, help="frames taken from the val split")
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for split, count in (("train", args.train), ("val", args.val)):
        (out / split).mkdir(parents=True)
        (out / f"{split}annot").mkdir()
        lines = [l.split() for l in (src / f"{split}.txt").read_text().splitlines() if l.strip()]
        listing = []
        for image_rel, mask_rel in pick(lines, count):
            name = Path(image_rel).stem
            image = Image.open(src / split / Path(image_rel).name).convert("RGB")
            mask = Image.open(src / f"{split}annot" / Path(mask_rel).name)
            size = (round(image.width * args.scale), round(image.height * args.scale))
            image.resize(size, Image.Resampling.BOX).save(out / split / f"{name}.jpg", quality=90)
            mask.resize(size, Image.Resampling.NEAREST).save(out / f"{split}annot" / f"{name}.png", optimize=True)
            listing.append(f"{split}/{name}.jpg {split}annot/{name}.png")
        (out / f"{split}.txt").write_text("\n".join(listing) + "\n")
    print(f"wrote {out}: {args.train} train and {args.val} val frames at scale {args.scale}")


if __name__ == "__main__":
    main()
