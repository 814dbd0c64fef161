"""Segmenting image files, folders of images and videos: the API behind predict.py.

    jobs = predicting.collect(["street.png", "photos/", "drive.mp4"])     # every input checked first
    for job, written in predicting.predict_jobs(predictor, jobs, "out/", options): ...

For an image X.ext: X_mask.png (class indices as a palette PNG, the input's size) and X_overlay.png
(colours over the image, with a legend). For a video V.ext: V_overlay.mp4, every frame segmented,
same frame count and frame rate. Inputs whose names would give the same output name get longer ones
(`a/street.png`, `b/street.jpg` -> street_png_*, street_jpg_*), so no result overwrites another.
Before anything is written, --out is checked and every input whose prediction would not fit in memory is
refused with a line suggesting --window or --image-size (segkit.memory).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segkit.data.common import IMAGE_EXTENSIONS
from segkit.errors import UserError
from segkit import fileio, visualize
from segkit.inference.predictor import to_labels

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclasses.dataclass
class Job:
    kind: str  # "image" or "video"
    path: Path
    name: str  # output name stem, unique among the jobs


def to_rgb8(im: Image.Image) -> np.ndarray:
    """uint8 RGB pixels of any PIL image: 16-bit and float images are scaled to 8 bits by their type's
    range (PIL's convert("RGB") would clip a 16-bit image to white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(im)
        top = 65535.0 if im.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            top = 1.0 if array.max(initial=0) <= 1.0 else top
        gray = np.clip(np.round(array.astype(np.float64) / top * 255), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return to_rgb8(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
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


def _unique_names(paths: list) -> list:
    """An output stem per path: its own stem, or for stems shared with another input the shortest tail of
    its path (folders, name, extension) that no other input has."""
    names = [p.stem for p in paths]
    for stem in {n for n in names if names.count(n) > 1}:
        group = [k for k, n in enumerate(names) if n == stem]
        for depth in range(1, max(len(paths[k].resolve().parts) for k in group) + 1):
            tails = {k: "_".join([*paths[k].resolve().parts[-depth:-1], paths[k].stem,
                                  paths[k].suffix.lstrip(".")]).strip("_") for k in group}
            if len(set(tails.values())) == len(group):
                for k, tail in tails.items():
                    names[k] = tail
                break
    return names


def collect(inputs) -> list:
    """[Job] for every input, checked: unreadable or unknown inputs raise before any output."""
    found = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise UserError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            found += [("image", p) for p in images]
        elif not path.exists():
            raise UserError(f"input {path} does not exist")
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            kind = _image_format(path)
            if kind:
                raise UserError(f"input {path} is a {kind} image, not a video (its name says {path.suffix})")
            open_video(path).release()
            found.append(("video", path))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(("image", path))
        else:
            raise UserError(f"input {path} is not an image ({', '.join(IMAGE_EXTENSIONS)}) "
                            f"or a video ({', '.join(VIDEO_EXTENSIONS)})")
    unique = {}
    for kind, path in found:  # the same file named twice is segmented once
        unique.setdefault(path.resolve(), (kind, path))
    found = list(unique.values())
    jobs = [Job(kind, path, name) for (kind, path), name in zip(found, _unique_names([p for _, p in found]))]
    for job in jobs:
        if job.kind == "image":
            read_image(job.path)
    return jobs


def _image_format(path: Path) -> str | None:
    """The image format PIL reads `path` as (e.g. "JPEG"), or None for a file that is not an image."""
    try:
        with Image.open(path) as im:
            return im.format
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def outputs(job: Job, out: Path) -> list:
    """The files predict writes for `job` in `out`."""
    if job.kind == "image":
        return [out / f"{job.name}_mask.png", out / f"{job.name}_overlay.png"]
    return [out / f"{job.name}_overlay.mp4"]


MANIFEST = ".segkit-predict.json"  # in --out: the files predict wrote there, with their hashes


def check_outputs(jobs, out: Path) -> None:
    """Refuse, before anything is written, an output that would land on one of the inputs, or on a file that
    predict did not write (a file listed in --out's manifest, unchanged since, may be replaced)."""
    inputs = {job.path.resolve() for job in jobs}
    written = _manifest(out)
    for job in jobs:
        for path in outputs(job, out):
            if path.resolve() in inputs:
                raise UserError(f"--out {out}: predicting {job.path} would write {path.name} over an input; "
                                "choose another --out")
            if path.exists() and written.get(path.name) != _digest(path):
                raise UserError(f"--out {out} already holds {path.name}, which predict did not write (or which "
                                "changed since); move it or choose another --out")


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(out: Path) -> dict:
    try:
        import json

        values = json.loads((out / MANIFEST).read_text())
        return values if isinstance(values, dict) else {}
    except (OSError, ValueError):
        return {}


def _record(out: Path, paths) -> None:
    written = _manifest(out)
    written.update({p.name: _digest(p) for p in paths})
    fileio.write_json(out / MANIFEST, written)


def input_size(job: Job) -> tuple:
    """(H, W) of an image job (from its header) or of a video's frames."""
    if job.kind == "image":
        with Image.open(job.path) as im:
            return im.size[1], im.size[0]
    import cv2

    capture = open_video(job.path)
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        capture.release()


def check_memory(predictor, jobs, options) -> None:
    """Refuse, before anything is written, an input whose prediction would not fit in memory; the
    message suggests --window or --image-size (segkit.memory)."""
    for job in jobs:
        height, width = input_size(job)
        predictor.check_memory(height, width, options, what=str(job.path))


def with_legend(picture, predictor, labels) -> np.ndarray:
    present = set(np.unique(labels).tolist())
    strip = visualize.legend(predictor.class_names, predictor.colors, picture.shape[1], present=present)
    return np.concatenate([picture, strip], axis=0)


def predict_image(predictor, job: Job, out: Path, options, alpha) -> list:
    """Writes NAME_mask.png and NAME_overlay.png; returns their paths."""
    image = read_image(job.path)
    labels = predictor.labels(image.astype(np.float32) / 255.0, **options)
    mask, over = out / f"{job.name}_mask.png", out / f"{job.name}_overlay.png"
    visualize.palette_png(labels, predictor.colors, mask)
    blend = visualize.overlay(image, labels, predictor.colors, alpha)
    visualize.save_image(with_legend(blend, predictor, labels), over)
    return [mask, over]


def predict_video(predictor, job: Job, out: Path, options, alpha, smooth) -> tuple:
    """Writes NAME_overlay.mp4; returns (path, frames, frames per second of segmentation)."""
    import cv2

    capture = open_video(job.path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    target = out / f"{job.name}_overlay.mp4"
    state, frames, start = None, 0, time.perf_counter()
    try:
        with fileio.atomic_path(target) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            try:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    rgb = frame[..., ::-1]
                    image = rgb.astype(np.float32) / 255.0
                    if smooth <= 0:
                        labels = predictor.labels(image, **options)
                    else:  # an exponential moving average of the logits over frames
                        logits = predictor.logits(image, **options)
                        state = logits if state is None else smooth * state + (1 - smooth) * logits
                        labels = to_labels(state)
                    writer.write(np.ascontiguousarray(visualize.overlay(rgb, labels, predictor.colors, alpha)[..., ::-1]))
                    frames += 1
                    rate = frames / (time.perf_counter() - start)
                    done = f"{frames}/{total}" if total else f"{frames}"
                    print(f"\r{job.path.name}: frame {done}  {rate:5.1f} frames/s", end="", file=sys.stderr, flush=True)
            finally:
                writer.release()
            if frames == 0:
                raise UserError(f"cannot decode video {job.path}: no frames")
    finally:
        capture.release()
        print(file=sys.stderr)
    return target, frames, frames / (time.perf_counter() - start)


def predict_jobs(predictor, jobs, out, options, alpha=0.5, smooth=0.0):
    """Segment every job into `out` (made here); yields (job, written paths, note) as each finishes."""
    if not 0 <= smooth < 1:
        raise UserError(f"--smooth must be in [0, 1), got {smooth}")
    if not 0 <= alpha <= 1:
        raise UserError(f"--opacity must be from 0 to 1, got {alpha}")
    out = fileio.check_writable(out, "--out", kind="folder")
    check_outputs(jobs, out)
    check_memory(predictor, jobs, options)
    out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if job.kind == "image":
            written = predict_image(predictor, job, out, options, alpha)
            _record(out, written)
            yield job, written, ""
        else:
            target, frames, rate = predict_video(predictor, job, out, options, alpha, smooth)
            _record(out, [target])
            yield job, [target], f"{frames} frames at {rate:.1f} frames/s"
