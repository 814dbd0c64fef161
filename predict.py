"""Segment images, folders of images and videos with a trained model.

    python predict.py --model runs/sample-mobilenetv2_pix2pix-... street.png photos/ --out predictions/
    python predict.py --model pretrained/camvid.keras drive.mp4 --out out/ --smooth 0.6

For an image X.ext: X_mask.png (class indices as a palette PNG, the input's size) and
X_overlay.png (colours over the image, with a legend). For a video V.ext: V_overlay.mp4,
every frame segmented, same frame count and frame rate. Every input is checked before
anything is written, so a bad input leaves no half-written output behind.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

import cli
import visualize
from data.common import IMAGE_EXTENSIONS
from errors import UserError
from evaluate import add_inference_flags, inference_options
from inference import load_predictor

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder, .keras file, SavedModel folder or .tflite file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or video files")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    parser.add_argument("--smooth", type=float, default=0.0,
                        help="video only: exponential smoothing of logits across frames, 0 (off) to <1")
    add_inference_flags(parser)
    return parser.parse_args(argv)


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None


def open_video(path: Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise UserError(f"cannot decode video {path}")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return capture


def collect(inputs) -> list:
    """[(kind, path)] for every input, checked: unreadable or unknown inputs raise before any output."""
    jobs = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise UserError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            jobs += [("image", p) for p in images]
        elif not path.exists():
            raise UserError(f"input {path} does not exist")
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            open_video(path).release()
            jobs.append(("video", path))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            jobs.append(("image", path))
        else:
            raise UserError(f"input {path} is not an image ({', '.join(IMAGE_EXTENSIONS)}) "
                            f"or a video ({', '.join(VIDEO_EXTENSIONS)})")
    for kind, path in jobs:
        if kind == "image":
            read_image(path)
    return jobs


def with_legend(picture, predictor, labels) -> np.ndarray:
    present = set(np.unique(labels).tolist())
    strip = visualize.legend(predictor.class_names, predictor.colors, picture.shape[1], present=present)
    return np.concatenate([picture, strip], axis=0)


def predict_image(predictor, path: Path, out: Path, options, alpha) -> np.ndarray:
    image = read_image(path)
    labels = predictor.labels(image.astype(np.float32) / 255.0, **options)
    visualize.palette_png(labels, predictor.colors, out / f"{path.stem}_mask.png")
    blend = visualize.overlay(image, labels, predictor.colors, alpha)
    visualize.save_image(with_legend(blend, predictor, labels), out / f"{path.stem}_overlay.png")
    return labels


def predict_video(predictor, path: Path, out: Path, options, alpha, smooth) -> tuple:
    """Writes V_overlay.mp4; returns (frames, frames per second of segmentation)."""
    import cv2

    capture = open_video(path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    target = out / f"{path.stem}_overlay.mp4"
    tmp = out / f".tmp-{path.stem}_overlay.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    state, frames, start = None, 0, time.perf_counter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = frame[..., ::-1]
            logits = predictor.logits(rgb.astype(np.float32) / 255.0, **options)
            state = logits if state is None or smooth <= 0 else smooth * state + (1 - smooth) * logits
            labels = np.argmax(state, -1) if state.shape[-1] > 1 else (state[..., 0] > 0).astype(np.int32)
            writer.write(np.ascontiguousarray(visualize.overlay(rgb, labels, predictor.colors, alpha)[..., ::-1]))
            frames += 1
            rate = frames / (time.perf_counter() - start)
            done = f"{frames}/{total}" if total else f"{frames}"
            print(f"\r{path.name}: frame {done}  {rate:5.1f} frames/s", end="", file=sys.stderr, flush=True)
    finally:
        capture.release()
        writer.release()
    print(file=sys.stderr)
    if frames == 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot decode video {path}: no frames")
    tmp.replace(target)
    return frames, frames / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    options = inference_options(args)
    if not 0 <= args.smooth < 1:
        raise UserError(f"--smooth must be in [0, 1), got {args.smooth}")
    predictor = load_predictor(args.model, num_threads=args.threads)
    jobs = collect(args.inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind, path in jobs:
        if kind == "image":
            predict_image(predictor, path, out, options, args.alpha)
            print(f"{path} -> {out / (path.stem + '_mask.png')}, {out / (path.stem + '_overlay.png')}")
        else:
            frames, rate = predict_video(predictor, path, out, options, args.alpha, args.smooth)
            print(f"{path} -> {out / (path.stem + '_overlay.mp4')}: {frames} frames at {rate:.1f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
