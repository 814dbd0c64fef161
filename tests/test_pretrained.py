"""The CamVid models shipped in pretrained/ work from a fresh clone: predict.py on a street photo, and
evaluate.py on the bundled sample's val frames (real CamVid val frames at half size, JPEG) scoring what
they scored when shipped."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit import sidecar
from segkit.data import camvid
from segkit.inference import scoring
from tests.conftest import run_script

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
SAMPLE = ROOT / "segkit" / "data" / "sample" / "camvid"
# Measured on the 32 sample val frames (180x240 JPEG), which the shipped networks trained on (train+val), so
# these are not held-out figures: camvid.keras 0.725 at their own size, the int8 files at their 360x480 (the
# frames upsampled 2x, the scale they trained at) 0.848 (slim), 0.846 (ensemble) and 0.805 (tiny student).
# Floors sit 4 points lower.
MODELS = {"camvid.keras": 0.68, "camvid_ensemble_int8.tflite": 0.80, "camvid_realtime_int8.tflite": 0.80,
          "camvid_tiny_int8.tflite": 0.76}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sidecar_names_camvid_classes(name):
    info = sidecar.read(PRETRAINED / name)  # either sidecar format; the entry whose hash is the file's
    assert info["dataset_info"]["class_names"] == list(camvid.CLASSES_11)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_a_street_photo(name, tmp_path):
    photo = tmp_path / "street.png"  # a PNG of another size than the model saw
    Image.open(SAMPLE / "val" / "0016E5_07959.jpg").resize((300, 220)).save(photo)
    result = run_script("predict.py", "--model", str(PRETRAINED / name), str(photo), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-1500:]
    mask = np.asarray(Image.open(tmp_path / "out" / "street_mask.png"))
    assert mask.shape == (220, 300)
    assert mask.max() < len(camvid.CLASSES_11)
    assert {0, 3} <= set(np.unique(mask).tolist())  # sky and road are in every street frame
    assert (tmp_path / "out" / "street_overlay.png").is_file()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_val_miou(name):
    evaluation = scoring.evaluate_model(PRETRAINED / name, dataset="sample", split="val")
    result = scoring.as_json(evaluation.report, evaluation.count)
    assert result["num_images"] == 32
    assert result["miou"] >= MODELS[name], result["per_class_iou"]
