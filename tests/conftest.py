"""Shared fixtures: tiny fake dataset trees in every supported layout, written with PIL into tmp_path.

Every mask is made of four vertical bands (12 columns each) of known stored values, so each test
knows the mapped mask and the pixel count of every class by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

H, W = 32, 48


def bands(values, height: int = H, width: int = W) -> np.ndarray:
    """int (height, width) array of len(values) equal vertical bands holding `values` left to right."""
    columns = np.repeat(np.asarray(values), width // len(values))
    return np.tile(columns, (height, 1))


def noise_image(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, array, mode: str | None = None, palette=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array), mode=mode) if mode else Image.fromarray(np.asarray(array))
    if palette is not None:
        image.putpalette(palette)
    image.save(path)
    return path


def save_gray(path: Path, values) -> Path:
    return save(path, np.asarray(values, np.uint8), "L")


def save_palette(path: Path, values) -> Path:
    """A palette ('P') PNG whose pixel values are the palette indices `values`, with the VOC palette."""
    from segkit.data.voc import voc_colormap

    palette = [c for rgb in voc_colormap(256) for c in rgb]
    return save(path, np.asarray(values, np.uint8), "P", palette)


def save_regions(path: Path, values) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(str(int(v)) for v in row) for row in np.asarray(values)) + "\n")
    return path


CAMVID_COLOURS = {"Sky": (128, 128, 128), "Road": (128, 64, 128), "Car": (64, 0, 128), "Void": (0, 0, 0)}


def save_colour_mask(path: Path, names) -> Path:
    """An RGB CamVid label with bands of the colours of `names`."""
    index = bands(list(range(len(names))))
    rgb = np.asarray([CAMVID_COLOURS[n] for n in names], np.uint8)[index]
    return save(path, rgb)


class Trees:
    """Builders of fake dataset trees under one tmp_path; each returns the data_dir to load."""

    def __init__(self, root: Path):
        self.root = root

    def camvid_segnet(self) -> Path:
        root = self.root / "CamVid"
        for split, names in (("train", ["a", "b"]), ("val", ["c"]), ("test", ["d", "e", "f"])):
            lines = []
            for k, name in enumerate(names):
                save(root / split / f"{name}.png", noise_image(k))
                save_gray(root / f"{split}annot" / f"{name}.png", bands([0, 3, 10, 11]))
                # The SegNet tutorial's lists carry its authors' absolute paths.
                lines.append(f"/SegNet/CamVid/{split}/{name}.png /SegNet/CamVid/{split}annot/{name}.png")
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        return root

    def camvid_colour(self) -> Path:
        root = self.root / "camvid32"
        root.mkdir()
        (root / "class_dict.csv").write_text(
            "name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in CAMVID_COLOURS.items()))
        for k, name in enumerate(["x", "y"]):
            save(root / "train" / f"{name}.png", noise_image(k))
            save_colour_mask(root / "train_labels" / f"{name}_L.png", ["Road", "Void", "Sky", "Car"])
        return root

    def voc(self, aug: bool = False) -> Path:
        """data_dir holding VOCdevkit/VOC2012 with 3 images; train.txt lists 2 of them, out of order."""
        voc = self.root / "VOCdevkit" / "VOC2012"
        ids = ["2007_000001", "2007_000002", "2007_000003"]
        for k, image_id in enumerate(ids):
            save(voc / "JPEGImages" / f"{image_id}.jpg", noise_image(k))
            save_palette(voc / "SegmentationClass" / f"{image_id}.png", bands([0, 15, 255, 20]))
        sets = voc / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True)
        (sets / "train.txt").write_text("2007_000003\n2007_000001\n")
        (sets / "val.txt").write_text("2007_000002\n")
        if aug:
            for image_id in ids:
                save_gray(voc / "SegmentationClassAug" / f"{image_id}.png", bands([1, 2, 255, 0]))
            aug_sets = voc / "ImageSets" / "SegmentationAug"
            aug_sets.mkdir(parents=True)
            (aug_sets / "train_aug.txt").write_text(
                "/JPEGImages/2007_000002.jpg /SegmentationClassAug/2007_000002.png\n2007_000001\n")
            (aug_sets / "val.txt").write_text("2007_000003\n")
        return self.root

    def cityscapes(self) -> Path:
        root = self.root / "cityscapes"
        frames = {"train": ["aachen_000000_000019", "bochum_000000_000313"], "val": ["frankfurt_000000_000294"]}
        for split, names in frames.items():
            for k, name in enumerate(names):
                city = name.split("_")[0]
                save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", noise_image(k))
                save_gray(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", bands([7, 26, 0, 3]))
        return root

    def stanford(self) -> Path:
        """iccv09Data with 6 images: sorted position 4 ("0000500") is the one val image."""
        root = self.root / "iccv09Data"
        for k, image_id in enumerate(["0000047", "0000051", "0000100", "0000200", "0000500", "0000600"]):
            save(root / "images" / f"{image_id}.jpg", noise_image(k))
            save_regions(root / "labels" / f"{image_id}.regions.txt", bands([-1, 5, 0, 7]))
        return self.root

    def folder_binary(self) -> Path:
        root = self.root / "binary"
        for k, name in enumerate(["a", "b"]):
            save(root / "images" / f"{name}.png", noise_image(k))
            save_gray(root / "masks" / f"{name}.png", bands([0, 255, 0, 255]))
        return root

    def folder_remap(self) -> Path:
        """Masks holding the values {3, 7, 9} and a classes.txt naming three classes."""
        root = self.root / "remap"
        for k, name in enumerate(["a", "b"]):
            save(root / "images" / f"{name}.jpg", noise_image(k))
            save_gray(root / "masks" / f"{name}.png", bands([3, 7, 9, 3]))
        (root / "classes.txt").write_text("cat\ndog\nbird\n")
        return root

    def folder_splits(self) -> Path:
        """train/ and val/ subfolders with index masks 0..2 and 255."""
        root = self.root / "splits"
        for split, names in (("train", ["a", "b", "c"]), ("val", ["d"])):
            for k, name in enumerate(names):
                save(root / split / "images" / f"{name}.png", noise_image(k))
                save_gray(root / split / "masks" / f"{name}.png", bands([0, 1, 2, 255]))
        return root


@pytest.fixture
def trees(tmp_path) -> Trees:
    return Trees(tmp_path)


# ---------------------------------------------------------------------------
# Runs: a tiny model on a small generated CamVid-layout dataset, and the commands in a subprocess

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "mobilenetv2_pix2pix", "--alpha", "0.35", "--image-size", "64", "64", "--batch-size", "4",
        "--precision", "float32", "--num-samples", "2", "--lr", "3e-3"]
# The same settings as a config, for the library.
TINY_CONFIG = dict(model="mobilenetv2_pix2pix", alpha=0.35, image_size=(64, 64), batch_size=4, precision="float32",
                   num_samples=2, lr=3e-3)


def tiny_config(data_dir, **changes):
    from segkit.config import TrainConfig

    return TrainConfig(**{"dataset": "camvid", "data_dir": str(data_dir), **TINY_CONFIG, **changes})


def predict_paths(model, inputs, out, **options):
    """predict.py's work through the library: every input segmented into `out`."""
    from segkit.inference import predicting
    from segkit.inference.predictor import load_predictor

    predictor = load_predictor(model)
    jobs = predicting.collect([str(i) for i in inputs])
    return list(predicting.predict_jobs(predictor, jobs, out, {"tta": "none", "scales": (1.0,), **options}))


def run_script(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def write_camvid_layout(root: Path, splits=(("train", 12), ("val", 4)), size=(64, 96)):
    """Shapes scenes saved in the CamVid SegNet layout (labels 0..3 of CamVid's 11; 11 = void)."""
    from segkit.data import shapes

    for split, count in splits:
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        ds, _ = shapes.load(split=split, count=count, image_size=size, seed=3)
        lines = []
        for k, (image, mask) in enumerate(ds.as_numpy_iterator()):
            mask = mask.astype(np.uint8)
            mask[:2, :] = 11  # a void band, ignored everywhere
            Image.fromarray((image * 255).round().astype(np.uint8)).save(root / split / f"f{k:03d}.png")
            Image.fromarray(mask).save(root / f"{split}annot" / f"f{k:03d}.png")
            lines.append(f"{split}/f{k:03d}.png {split}annot/f{k:03d}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def camvid_dir(tmp_path_factory):
    return write_camvid_layout(tmp_path_factory.mktemp("data") / "camvid")


def run_command(main, argv) -> int:
    """A command's exit status as the console script gives it (argparse's own errors exit with 2)."""
    from segkit import cli

    try:
        return cli.run(main, argv)
    except SystemExit as exc:
        return exc.code


def run_verify(argv) -> int:
    from segkit.cli import verify

    return run_command(verify.main, argv)
