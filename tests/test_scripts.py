"""Training, evaluation and prediction end to end on a small generated CamVid-layout dataset: through the
library (segkit.training.trainer, segkit.inference.scoring, segkit.inference.predicting) and, where the command line itself is the
subject (exit codes, one-line errors, SIGKILL and --resume), through the scripts in a subprocess."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit import models
from segkit.data import shapes
from segkit.errors import UserError
from segkit.inference import predicting, scoring
from segkit.training import recorder as recording, run_folder, trainer
from segkit.config import TrainConfig
from segkit.inference.predictor import load_predictor
from tests.conftest import ROOT, TINY, predict_paths, run_script, tiny_config, write_camvid_layout  # noqa: F401



@pytest.fixture(scope="module")
def trained_run(camvid_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = trainer.train(tiny_config(camvid_dir, epochs=3, run_dir=str(run_dir)))
    assert result.stopped == "" and result.epochs == 3
    return run_dir


def test_run_folder_describes_itself(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["config"]["model"] == "mobilenetv2_pix2pix"
    assert config["config"]["image_size"] == [64, 64]
    assert config["dataset_info"]["class_names"][:2] == ["Sky", "Building"]
    assert set(config["versions"]) >= {"tensorflow", "keras", "numpy", "python"}
    assert config["fused_batchnorm"] is True  # the BatchNorm kernel the run trained with is on record
    rows = list(csv.DictReader(open(trained_run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in ("loss", "val_loss", "val_miou", "lr", "train_images_per_sec"):
        assert all(r[key] != "" for r in rows), key
    assert all(float(r["train_images_per_sec"]) > 0 for r in rows)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns
    assert (trained_run / "model.keras").is_file()
    assert [p.name for p in (trained_run / "checkpoints").iterdir()] == ["epoch_003.keras"]
    # The best model is saved without the optimizer's two Adam slots; the checkpoint keeps them.
    assert (trained_run / "model.keras").stat().st_size < 0.5 * (trained_run / "checkpoints" / "epoch_003.keras").stat().st_size
    assert (trained_run / "curves.png").is_file()
    assert sorted(p.name for p in (trained_run / "samples").iterdir()) == [
        "epoch_001.png", "epoch_002.png", "epoch_003.png"]
    assert any((trained_run / "logs").rglob("*tfevents*"))
    best = max(float(r["val_miou"]) for r in rows)
    assert 0.0 < best <= 1.0


def test_evaluate_json_and_predict_agree(trained_run, camvid_dir, tmp_path):
    evaluation = scoring.evaluate_model(trained_run)
    result = json.loads(json.dumps(scoring.as_json(evaluation.report, evaluation.count)))
    assert set(result) >= {"miou", "mean_dice", "pixel_accuracy", "per_class_iou", "confusion_matrix",
                           "class_names", "num_images"}
    assert result["num_images"] == 4
    assert list(result["per_class_iou"]) == result["class_names"]
    assert all(v is None or 0.0 <= v <= 1.0 for v in result["per_class_iou"].values())
    # predict.py on the same val images: masks scored by hand give the same mIoU.
    out = tmp_path / "pred"
    assert len(predict_paths(trained_run / "model.keras", [camvid_dir / "val"], out)) == 4
    cm = np.zeros((11, 11), np.int64)
    for image in sorted((camvid_dir / "val").iterdir()):
        pred = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        true = np.asarray(Image.open(camvid_dir / "valannot" / image.name)).astype(np.int64)
        assert pred.shape == true.shape
        assert Image.open(out / f"{image.stem}_mask.png").mode == "P"
        keep = true < 11
        cm += np.bincount(true[keep] * 11 + pred[keep], minlength=121).reshape(11, 11)
    assert cm.tolist() == result["confusion_matrix"]
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    assert result["miou"] == pytest.approx(np.mean(tp[denom > 0] / denom[denom > 0]), abs=1e-9)
    assert (out / "f000_overlay.png").is_file()


def test_evaluate_table_and_out(trained_run, tmp_path):
    evaluation = scoring.evaluate_model(trained_run, worst=6, samples=4, tta="flip")
    scoring.write_outputs(evaluation, tmp_path / "ev")
    text = scoring.table(evaluation.report).strip().splitlines()
    assert text[-1].startswith("mIoU: 0.") or text[-1] == "mIoU: 1.0000"
    assert any(line.startswith("Sky") for line in text)
    for name in ("metrics.json", "confusion.png", "worst.png", "samples.png"):
        assert (tmp_path / "ev" / name).is_file()
    # samples.png: a legend over 4 rows (evenly spaced val images) of input | ground truth | prediction
    from PIL import Image as PILImage
    width, height = PILImage.open(tmp_path / "ev" / "samples.png").size
    assert width >= 3 * 96 and height >= 4 * 64


def test_video_every_frame(trained_run, tmp_path):
    import cv2

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (96, 64))
    ds, _ = shapes.load(split="val", count=7, image_size=(64, 96))
    for image, _ in ds.as_numpy_iterator():
        writer.write((image[..., ::-1] * 255).astype(np.uint8))
    writer.release()
    predictor = load_predictor(trained_run)
    for smooth in (0.5, 0.0):  # logits averaged over frames; each frame's own mask
        out = tmp_path / f"v{smooth}"
        [(_, written, note)] = predicting.predict_jobs(predictor, predicting.collect([str(video)]), out,
                                                       {"tta": "none", "scales": (1.0,)}, smooth=smooth)
        assert written == [out / "clip_overlay.mp4"] and note.startswith("7 frames")
        capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
        ok, frame = capture.read()
        assert ok and frame.shape == (64, 96, 3)


def test_resume_after_sigkill(camvid_dir, tmp_path):
    run_dir = tmp_path / "killed"
    args = ["train.py", "--dataset", "camvid", "--data-dir", str(camvid_dir), *TINY, "--epochs", "4",
            "--steps-per-epoch", "12", "--run-dir", str(run_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while run_folder.latest_checkpoint(run_dir)[0] < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)  # into epoch 2
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at, _ = run_folder.latest_checkpoint(run_dir)
    assert 1 <= killed_at < 4
    result = run_script("train.py", "--resume", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {run_dir} from epoch {killed_at}" in result.stdout
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run_dir / "history.csv"))]
    assert epochs == [1, 2, 3, 4]
    assert run_folder.latest_checkpoint(run_dir)[0] == 4
    assert not list((run_dir / "checkpoints").glob(".tmp*"))


class FakeSaver:
    suffix = ".ckpt"

    def save_checkpoint(self, path):
        Path(path).write_text("state")

    def save_model(self, path):
        Path(path).write_text("model")

    @staticmethod
    def model_path(run_dir):
        return Path(run_dir) / "model.fake"


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    from types import SimpleNamespace

    splits = SimpleNamespace(info=None, sample_images=None, sample_masks=None, steps=3, global_batch=2)
    recorder = recording.RunRecorder(run_folder.Run(tmp_path), TrainConfig(), splits, FakeSaver())
    recorder.epoch_begin()
    for batch in range(3):
        assert recorder.batch_end(batch, 1.0)
    recorder.epoch_end(1, {"loss": 1.0, "val_loss": 1.0, "val_miou": 0.5}, lr=0.1)
    recorder.epoch_begin()
    assert not recorder.batch_end(0, float("nan"))
    recorder.epoch_end(2, {"loss": float("nan")}, lr=0.1)
    assert recorder.stop
    assert run_folder.latest_checkpoint(tmp_path)[0] == 1
    assert [int(r["epoch"]) for r in run_folder.read_history(tmp_path)] == [1]
    assert "epoch 2, batch 1" in recorder.nonfinite_message() and "epoch_001.ckpt" in recorder.nonfinite_message()


def test_nonfinite_loss_end_to_end(camvid_dir, tmp_path):
    result = run_script("train.py", "--dataset", "camvid", "--data-dir", str(camvid_dir), *TINY[:-2],
                        "--lr", "1e30", "--lr-schedule", "constant", "--epochs", "2", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "stopping: the loss became" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["train.py", "--dataset", "camvid", "--data-dir", "/nonexistent/camvid"], "does not exist"),
    (["train.py", "--dataset", "nope"], "argument --dataset: invalid choice: 'nope'"),
    (["train.py", "--model", "nope", "--epochs", "1"], "argument --model: invalid choice: 'nope'"),
    (["train.py", "--image-size", "100", "100"], "multiples of 32"),
    (["evaluate.py", "--model", "/nonexistent/model.keras"], "does not exist"),
    (["predict.py", "--model", "/nonexistent", "x.png"], "does not exist"),
])
def test_bad_input_is_one_line(args, message):
    result = run_script(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-1500:]


def test_predict_bad_inputs_write_nothing(trained_run, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "broken.png").write_bytes(b"PNG but not really")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    cases = [([str(good), str(tmp_path / "notes.txt")], trained_run, "is not an image"),
             ([str(good), str(tmp_path / "broken.mp4")], trained_run, "cannot decode video"),
             ([str(good), str(tmp_path / "broken.png")], trained_run, "cannot read image"),
             ([str(good)], empty_run, "has no model")]
    for inputs, model, message in cases:
        out = tmp_path / "out"
        result = run_script("predict.py", "--model", str(model), *inputs, "--out", str(out))
        assert result.returncode == 2, result.stderr[-1500:]
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert message in result.stderr
        assert not out.exists()


UNET = dict(model="unet_tf", alpha=None, base_filters=8, precision="auto", lr=1e-3, loss="tversky_cce")


def test_unet_tf_same_run_folder_and_scripts(camvid_dir, tmp_path):
    """The raw-TF U-Net goes through train/evaluate/predict/--resume like the Keras models."""
    run_dir = tmp_path / "unet"
    assert trainer.train(tiny_config(camvid_dir, **UNET, epochs=1, run_dir=str(run_dir))).epochs == 1
    assert trainer.resume(run_dir, epochs=2).epochs == 2
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:  # each term is logged, and the total is their weighted sum (lam = 0.75)
        assert float(row["loss"]) == pytest.approx(0.75 * float(row["tversky"]) + 0.25 * float(row["cce"]), rel=1e-4)
        assert float(row["val_loss"]) == pytest.approx(
            0.75 * float(row["val_tversky"]) + 0.25 * float(row["val_cce"]), rel=1e-4)
    assert (run_dir / "saved_model" / "saved_model.pb").is_file()
    assert (run_dir / "checkpoints" / "epoch_002" / "ckpt.index").is_file()
    assert any((run_dir / "logs").rglob("*tfevents*"))
    assert (run_dir / "samples" / "epoch_002.png").is_file()
    evaluation = scoring.evaluate_model(run_dir)
    result = scoring.as_json(evaluation.report, evaluation.count)
    assert result["num_images"] == 4 and 0.0 <= result["miou"] <= 1.0
    out = tmp_path / "pred"
    assert len(predict_paths(run_dir, [camvid_dir / "val" / "f000.png"], out)) == 1
    assert np.asarray(Image.open(out / "f000_mask.png")).shape == (64, 96)


def test_init_from_copies_weights_and_checks_fit(trained_run, camvid_dir, tmp_path):
    """--init-from starts a new run from a trained model's weights: exactly those weights, a val mIoU
    at the source's level after an epoch at a tiny learning rate, and one clear line when they do not fit."""
    import keras

    from segkit.data import camvid
    from segkit.training.loop_keras import build_and_compile

    source = keras.saving.load_model(trained_run / "model.keras", compile=False)
    _, info = camvid.load(str(camvid_dir), "train")
    config = TrainConfig(dataset="camvid", model="mobilenetv2_pix2pix", alpha=0.35, init_from=str(trained_run))
    model = build_and_compile(config, info, steps=3, weights=None)
    for ours, theirs in zip(model.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)

    # end to end: one epoch at a negligible learning rate keeps the source's quality
    best_source = max(float(r["val_miou"]) for r in csv.DictReader(open(trained_run / "history.csv")))
    run_dir = tmp_path / "finetune"
    result = trainer.train(tiny_config(camvid_dir, lr=1e-9, epochs=1, init_from=str(trained_run / "model.keras"),
                                       run_dir=str(run_dir)))
    assert result.epochs == 1
    first = float(next(csv.DictReader(open(run_dir / "history.csv")))["val_miou"])
    assert first == pytest.approx(best_source, abs=0.02)
    assert json.loads((run_dir / "config.json").read_text())["config"]["init_from"] == str(trained_run / "model.keras")

    # weights of another width, a missing file, and unet_tf are refused in one line
    for args, message in [(["--alpha", "0.5", "--init-from", str(trained_run)], "do not fit"),
                          (["--init-from", str(tmp_path / "missing.keras")], "no .keras model there"),
                          (["--model", "unet_tf", "--init-from", str(trained_run)], "works with the Keras models")]:
        result = run_script("train.py", "--dataset", "camvid", "--data-dir", str(camvid_dir), *TINY, *args,
                            "--epochs", "1", "--run-dir", str(tmp_path / "refused"))
        assert result.returncode == 2, result.stderr[-1500:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
        assert not (tmp_path / "refused").exists()


def test_to_flags_round_trip():
    """to_flags gives the train.py flags of a config; parsed back they make the same config."""
    import argparse

    from segkit.config import add_config_flags, config_from_args, to_flags

    config = tiny_config("/data/camvid", epochs=3, encoder_frozen=True, keep="last", ema=0.999)
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    assert config_from_args(parser.parse_args(to_flags(config))) == config
    assert to_flags(TrainConfig()) == []


def test_help_prints_each_default_once():
    result = run_script("train.py", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert text.count("(default: sample)") == 1
    assert not re.search(r"\(default: [^)]*\)\s*\(default:", text)  # no flag shows two defaults


HISTORY_KEYS = ("loss", "val_loss", "miou", "val_miou", "lr")


def history(run_dir):
    return [{k: float(r[k]) for k in HISTORY_KEYS} for r in csv.DictReader(open(Path(run_dir) / "history.csv"))]


def test_resume_gives_the_history_of_an_unbroken_run(camvid_dir, tmp_path, monkeypatch):
    """Stopped after epoch 1 and resumed, a run sees the same batches and learning rates as one that never
    stopped: the same losses, mIoU and rates epoch by epoch. 5 steps of 4 per epoch over 12 images: epochs
    and passes over the data do not line up, so the data stream must be indexed by step, not by epoch."""
    config = dict(epochs=3, steps_per_epoch=5, num_samples=0)
    unbroken = trainer.train(tiny_config(camvid_dir, **config, run_dir=str(tmp_path / "unbroken")))

    real_epoch_end = recording.RunRecorder.epoch_end

    def stop_after_first(self, epoch, logs, lr):
        real_epoch_end(self, epoch, logs, lr)
        self.stop = True  # as if the process had ended here

    monkeypatch.setattr(recording.RunRecorder, "epoch_end", stop_after_first)
    broken = tmp_path / "broken"
    assert trainer.train(tiny_config(camvid_dir, **config, run_dir=str(broken))).epochs == 1
    monkeypatch.setattr(recording.RunRecorder, "epoch_end", real_epoch_end)
    assert trainer.resume(broken).epochs == 3
    expected, got = history(unbroken.run_dir), history(broken)
    assert len(got) == 3
    for row_expected, row_got in zip(expected, got):
        for key in HISTORY_KEYS:
            assert row_got[key] == pytest.approx(row_expected[key], rel=1e-4, abs=1e-6), (key, row_got, row_expected)


def test_extending_a_finished_run_rebuilds_the_schedule(camvid_dir, tmp_path):
    """--resume --epochs N past the end: from the next epoch on, the learning rates of an N-epoch plan (not the
    old plan's last rate, which is 0 for poly)."""
    from segkit.training.schedule import learning_rate, rate_at

    config = dict(steps_per_epoch=3, num_samples=0, lr_schedule="poly")
    short = trainer.train(tiny_config(camvid_dir, epochs=2, run_dir=str(tmp_path / "short"), **config))
    assert history(short.run_dir)[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # poly ends at 0
    trainer.resume(short.run_dir, epochs=4)
    rates = [row["lr"] for row in history(short.run_dir)]
    plan = learning_rate(tiny_config(camvid_dir, epochs=4, **config), 3)  # an unbroken 4-epoch run's rates
    assert rates[2:] == pytest.approx([rate_at(plan, 3 * epoch) for epoch in (3, 4)], rel=1e-6)
    assert rates[2] > 0
    assert json.loads((short.run_dir / "config.json").read_text())["config"]["epochs"] == 4


def test_resume_takes_only_epochs(trained_run):
    result = run_script("train.py", "--resume", "--run-dir", str(trained_run), "--lr", "0.1", "--epochs", "9")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --resume takes its settings from the run's config.json; only --epochs may be given with it "
        "(got --lr)")


def test_config_file_round_trip(trained_run, tmp_path):
    """--config RUN/config.json repeats a run's settings (a new folder), flags override them, and JSON or YAML
    files of TrainConfig fields work too; unknown fields and wrong kinds are refused in one line."""
    import argparse

    from segkit.config import add_config_flags, config_from_args, load_config_file

    stored = TrainConfig.from_json(json.loads((trained_run / "config.json").read_text())["config"])
    loaded = load_config_file(trained_run / "config.json")
    assert loaded == TrainConfig.from_json({**stored.to_json(), "run_dir": None})
    assert load_config_file(trained_run) == loaded  # the folder itself
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    varied = config_from_args(parser.parse_args(["--lr", "0.01", "--data-option", "cache=false"]), loaded)
    assert varied.lr == 0.01 and varied.data_options == {"cache": False} and varied.epochs == stored.epochs
    (tmp_path / "c.yaml").write_text("dataset: camvid\nimage_size: [64, 96]\nepochs: 2\ndata_options: {cache: false}\n")
    assert load_config_file(tmp_path / "c.yaml") == TrainConfig(dataset="camvid", image_size=(64, 96), epochs=2,
                                                                   data_options={"cache": False})
    for text, message in (('{"epoch": 3}', r"unknown field\(s\) \['epoch'\]"), ('{"epochs": "3"}', "--epochs must be an integer"),
                          ("[1, 2]", "must hold a mapping"), ("{", "is not valid JSON")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(UserError, match=message):
            load_config_file(tmp_path / "bad.json")
    result = run_script("train.py", "--config", str(tmp_path / "bad.json"))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: --config")


def test_train_py_takes_voc_aug_through_data_option(trees, tmp_path):
    """train.py --data-option aug=true trains on VOC's SBD list (train_aug) and records the option in
    config.json; without the option the aug split is not there, in one line."""
    root = trees.voc(aug=True)
    flags = ["--dataset", "voc", "--data-dir", str(root), "--train-split", "train_aug", "--model",
             "mobilenetv2_pix2pix", "--alpha", "0.35", "--image-size", "32", "32", "--val-image-size", "32", "32",
             "--batch-size", "2", "--epochs", "1", "--precision", "float32", "--num-samples", "0"]
    result = run_script("train.py", *flags, "--data-option", "aug=true", "--run-dir", str(tmp_path / "aug"))
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "aug" / "config.json").read_text())["config"]
    assert config["data_options"] == {"aug": True} and config["train_split"] == "train_aug"
    assert len(run_folder.read_history(tmp_path / "aug")) == 1
    refused = run_script("train.py", *flags, "--run-dir", str(tmp_path / "plain"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "train_aug" in refused.stderr.strip().splitlines()[-1] and not (tmp_path / "plain").exists()


def test_data_option_reaches_the_loader(camvid_dir, trained_run):
    """--data-option goes to the dataset's loader in training, evaluation and export read the run's options
    back (given ones override them), and an option the loader does not take is refused by name."""
    from segkit.config import run_loader_options
    from segkit.training.splits import make_splits

    splits = make_splits(tiny_config(camvid_dir, data_options={"cache": False}, num_samples=0), replicas=1)
    assert splits.num_train == 12
    with pytest.raises(UserError, match="camvid: unknown data option 'aug'; its loader takes: cache"):
        make_splits(tiny_config(camvid_dir, data_options={"aug": True}), replicas=1)
    stored = {"dataset": "camvid", "data_options": {"cache": False}, "val_fraction": None}
    assert run_loader_options(stored) == {"cache": False}
    assert run_loader_options(stored, given=["cache=true"]) == {"cache": True}
    assert run_loader_options(stored, dataset="sample") == {}  # another dataset: not the run's options
    with pytest.raises(UserError, match="unknown data option 'aug'"):
        scoring.evaluate_model(trained_run, data_options=["aug=true"])


def test_distillation_trains_a_student_and_resumes(trained_run, camvid_dir, tmp_path):
    """--distill-from: the run logs the distillation term, its model.keras is the student alone (its own size,
    a plain Keras file), and a stopped run resumes from a checkpoint that holds student and teacher."""
    import keras

    from segkit.training import loop_keras

    config = tiny_config(camvid_dir, epochs=1, steps_per_epoch=2, num_samples=0, alpha=0.5,
                         distill_from=str(trained_run), distill_weight=1.0, distill_temperature=2.0,
                         run_dir=str(tmp_path / "student"))
    result = trainer.train(config)
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert float(rows[0]["distill"]) > 0 and math.isfinite(float(rows[0]["loss"]))
    student = keras.saving.load_model(result.run_dir / "model.keras")
    assert student.name == "mobilenetv2_pix2pix" and student.count_params() == models.build_model(
        "mobilenetv2_pix2pix", 11, alpha=0.5).count_params()
    checkpoint = loop_keras.load_checkpoint(run_folder.latest_checkpoint(result.run_dir)[1])
    assert checkpoint.teacher.count_params() > 0 and not checkpoint.teacher.trainable
    assert trainer.resume(result.run_dir, epochs=2).epochs == 2
    with pytest.raises(UserError, match="predicts 11 classes; this run's data has 4"):
        loop_keras.load_teacher(str(trained_run), 4)


def test_auxiliary_head_trains_and_resumes(camvid_dir, tmp_path):
    """--aux-weight: the run logs the auxiliary term, model.keras is the network without the head (a plain
    Keras file the size of the model alone), and a stopped run resumes from a checkpoint that holds both."""
    import keras

    from segkit.training import loop_keras
    from segkit.training.auxiliary import AuxiliaryHead

    config = tiny_config(camvid_dir, model="ddrnet", alpha=None, variant="nano", epochs=1, steps_per_epoch=2,
                         num_samples=0, aux_weight=0.4, val_image_size=(64, 64), run_dir=str(tmp_path / "aux"))
    result = trainer.train(config)
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert float(rows[0]["aux"]) > 0 and math.isfinite(float(rows[0]["loss"]))
    model = keras.saving.load_model(result.run_dir / "model.keras")
    assert model.name == "ddrnet" and len(model.outputs) == 1
    assert model.count_params() == models.build_model("ddrnet", 11, variant="nano").count_params()
    checkpoint = loop_keras.load_checkpoint(run_folder.latest_checkpoint(result.run_dir)[1])
    assert isinstance(checkpoint, AuxiliaryHead) and checkpoint.weight == 0.4
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(checkpoint(x)), np.asarray(model(x)), atol=1e-5)
    assert trainer.resume(result.run_dir, epochs=2).epochs == 2
