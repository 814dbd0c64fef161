"""Fault injection (issue 16): one test per numbered fault, each checking the one-line message (through the
library's UserError, or a script's exit status 2 and `error:` line where the script itself is the subject)
and that the files that were there before are byte-identical afterwards.

One tiny run (2 epochs of 2 steps on a generated CamVid-layout dataset) is trained once for the module;
each test works on a copy of it.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.data import camvid
from segkit.errors import UserError
from segkit import fileio, memory
from segkit.inference import loading, predicting, scoring
from segkit.training import run_folder, trainer
from segkit.config import TrainConfig, validate
from segkit.inference.predictor import load_predictor
from segkit.training.splits import make_splits
from tests.conftest import ROOT, predict_paths, run_script, run_verify, tiny_config

PRETRAINED_TFLITE = ROOT / "pretrained" / "camvid_realtime_int8.tflite"
RUN_SETTINGS = dict(epochs=2, steps_per_epoch=2, num_samples=0)


def snapshot(*roots) -> dict:
    """{path: sha256} of every file under `roots` (files or folders)."""
    found = {}
    for root in map(Path, roots):
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def temporaries(root) -> list:
    return [p for p in Path(root).rglob(f"{fileio.TMP_PREFIX}*")]


def error_line(result) -> str:
    """The script's one `error:` line; fails on a traceback, another exit status or more error lines."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and result.stderr.strip().splitlines()[-1] == lines[0], result.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(camvid_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = trainer.train(tiny_config(camvid_dir, **RUN_SETTINGS, run_dir=str(run_dir)))
    assert result.epochs == 2 and run_folder.latest_checkpoint(run_dir)[0] == 2
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def camvid_copy(camvid_dir, tmp_path) -> Path:
    copy = tmp_path / "camvid"
    shutil.copytree(camvid_dir, copy)
    return copy


# 1 ------------------------------------------------------------------------------------------------------
def test_01_resume_without_checkpoint_changes_nothing(run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    before = snapshot(run_copy)
    with pytest.raises(UserError, match=r"lists 2 finished epoch\(s\) in history.csv but has no checkpoint"):
        trainer.resume(run_copy)
    (run_copy / "history.csv").unlink()  # a model is still there to lose
    before.pop(str(run_copy / "history.csv"))
    with pytest.raises(UserError, match="holds a trained model but has no checkpoint"):
        trainer.resume(run_copy, epochs=4)
    assert snapshot(run_copy) == before


# 2 ------------------------------------------------------------------------------------------------------
def test_02_export_refuses_nan_weights_and_keeps_the_good_file(trained, camvid_dir, tmp_path):
    import keras

    from segkit import models  # noqa: F401  (registers the layers for loading)

    model = keras.saving.load_model(trained / "model.keras", compile=False)
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    broken = tmp_path / "nan.keras"
    model.save(broken)
    good = tmp_path / "good.keras"  # an earlier export, which a failed one must leave as it is
    assert run_script("export.py", "--model", str(trained), "--format", "keras", "--out", str(good),
                      "--dataset", "camvid", "--data-dir", str(camvid_dir)).returncode == 0
    before = snapshot(tmp_path)
    result = run_script("export.py", "--model", str(broken), "--format", "keras", "--out", str(good),
                        "--dataset", "camvid", "--data-dir", str(camvid_dir))
    assert "non-finite logits" in error_line(result)
    assert snapshot(tmp_path) == before and not temporaries(tmp_path)


# 3 ------------------------------------------------------------------------------------------------------
def test_03_truncated_tflite_is_refused_before_the_interpreter(tmp_path):
    payload = PRETRAINED_TFLITE.read_bytes()
    for size in (3_000_000, 100, len(payload) - 1000):
        cut = tmp_path / f"cut{size}.tflite"
        cut.write_bytes(payload[:size])
        with pytest.raises(UserError, match=rf"{cut} is (truncated or )?damaged.*export it again"):
            loading.load_model(cut)
    cut = tmp_path / "t.tflite"
    cut.write_bytes(payload[:3_000_000])
    before = snapshot(tmp_path)
    line = error_line(run_script("evaluate.py", "--model", str(cut), "--dataset", "sample"))
    assert str(cut) in line and "truncated" in line
    assert snapshot(tmp_path) == before


# 4 ------------------------------------------------------------------------------------------------------
def save_16bit(path: Path, values) -> None:
    Image.fromarray(np.asarray(values, np.uint16)).save(path)


def test_04_sixteen_bit_labels_read_as_stored_and_16_bit_photos_scaled(camvid_dir, tmp_path, capsys):
    root = camvid_copy(camvid_dir, tmp_path)
    expected = [np.asarray(Image.open(p)).astype(np.int64) for p in sorted((root / "valannot").iterdir())]
    for path, values in zip(sorted((root / "valannot").iterdir()), expected):
        save_16bit(path, values)
    ds, _ = camvid.load(str(root), "val")
    got = [m for _, m in ds.as_numpy_iterator()]
    for mask, values in zip(got, expected, strict=True):
        assert mask.tolist() == np.where(values == 11, 255, values).tolist()  # 11: void -> ignore
    assert run_verify(["--dataset", "camvid", "--data-dir", str(root), "--split", "val"]) == 0
    report = capsys.readouterr().out
    assert "4 of 4 masks are 16-bit PNGs (read as their stored values)" in report
    assert "Sky" in report and " 100.00%" not in report

    # 16-bit values that are no class (an 8-bit mask scaled by 257) are named, with the values
    bad = sorted((root / "valannot").iterdir())[1]
    save_16bit(bad, expected[1] * 257)
    scaled = " ".join(str(v) for v in sorted(set((expected[1] * 257).ravel().tolist()) - {0}))
    with pytest.raises(UserError, match=rf'mask "{bad}" has label values outside the dataset\'s classes: \[{scaled}\]'):
        with _data_errors(root):
            list(camvid.load(str(root), "val")[0].as_numpy_iterator())

    # a 16-bit photo for predict.py: scaled to 8 bits, not clipped to white
    photo = tmp_path / "photo16.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(photo)
    assert predicting.read_image(photo).tolist() == np.full((8, 8, 3), 128, np.uint8).tolist()


def _data_errors(root):
    from segkit.data import data_errors_as_user_errors

    return data_errors_as_user_errors(camvid.load(str(root), "val")[1])


# 5 ------------------------------------------------------------------------------------------------------
def test_05_split_smaller_than_one_batch_is_refused(camvid_dir, tmp_path):
    run_dir = tmp_path / "small"
    with pytest.raises(UserError, match=r"camvid/train has 12 image\(s\), fewer than one batch of 16: nothing "
                                        r"would be trained; lower --batch-size"):
        trainer.train(tiny_config(camvid_dir, batch_size=16, run_dir=str(run_dir)))
    assert not run_dir.exists()


# 6 ------------------------------------------------------------------------------------------------------
def test_06_negative_steps_and_bad_numbers_in_train_py(tmp_path):
    line = error_line(run_script("train.py", "--steps-per-epoch", "-3", "--run-dir", str(tmp_path / "r")))
    assert line == "error: --steps-per-epoch must be between 1 and 100000000, got -3"
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="--epochs must be between 1 and 100000, got 0"):
        validate(TrainConfig(epochs=0))


# 7 ------------------------------------------------------------------------------------------------------
def test_07_inputs_with_the_same_stem_get_their_own_outputs(trained, camvid_dir, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = np.asarray(Image.open(camvid_dir / "val" / "f000.png"))
    second = np.asarray(Image.open(camvid_dir / "val" / "f001.png"))
    Image.fromarray(first).save(tmp_path / "a" / "street.png")
    Image.fromarray(second).save(tmp_path / "b" / "street.jpg", quality=100)
    out = tmp_path / "out"
    done = predict_paths(trained / "model.keras", [tmp_path / "a" / "street.png", tmp_path / "b" / "street.jpg"], out)
    assert sorted(p.name for p in out.iterdir()) == ["street_jpg_mask.png", "street_jpg_overlay.png",
                                                     "street_png_mask.png", "street_png_overlay.png"]
    assert [str(w[0]) for _, w, _ in done] == [str(out / "street_png_mask.png"), str(out / "street_jpg_mask.png")]
    alone = predict_paths(trained / "model.keras", [tmp_path / "a" / "street.png"], tmp_path / "alone")
    assert alone[0][1][0].read_bytes() == (out / "street_png_mask.png").read_bytes()


# 8 ------------------------------------------------------------------------------------------------------
def test_08_full_disk_leaves_no_temporary_and_resume_works(run_copy):
    checkpoint = run_folder.latest_checkpoint(run_copy)[1]
    limit = checkpoint.stat().st_size // 2  # history.csv and model.keras fit, the checkpoint does not
    assert (run_copy / "model.keras").stat().st_size < limit
    before = snapshot(run_copy / "checkpoints")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "train.py", "--resume", "--run-dir", str(run_copy), "--epochs", "3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, preexec_fn=small_files)
    line = error_line(result)
    assert line.startswith(f"error: cannot write {run_copy / 'checkpoints' / 'epoch_003.keras'}: no space left")
    assert not temporaries(run_copy)
    assert snapshot(run_copy / "checkpoints") == before  # the earlier checkpoint survives
    assert trainer.resume(run_copy, epochs=3).epochs == 3  # and resuming from it works
    assert run_folder.latest_checkpoint(run_copy)[0] == 3 and not temporaries(run_copy)
    assert [int(r["epoch"]) for r in run_folder.read_history(run_copy)] == [1, 2, 3]


def test_08_atomic_path_cleans_up_after_any_failure(tmp_path):
    final = tmp_path / "x.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with fileio.atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    with pytest.raises(UserError, match=rf"cannot write {final}: no space left"):
        with fileio.atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    long_name = tmp_path / ("y" * 260 + ".png")
    with pytest.raises(UserError, match="cannot write .*: File name too long"):
        with fileio.atomic_path(long_name) as tmp:
            tmp.write_bytes(b"x")
    assert final.read_bytes() == b"old" and not temporaries(tmp_path)


# 9 ------------------------------------------------------------------------------------------------------
def test_09_corrupt_checkpoint_is_refused_before_anything_is_written(run_copy):
    checkpoint = run_folder.latest_checkpoint(run_copy)[1]
    checkpoint.write_bytes(checkpoint.read_bytes()[:50_000])
    before = snapshot(run_copy)
    with pytest.raises(UserError, match=rf"checkpoint {checkpoint} is damaged or not a .keras file"):
        trainer.resume(run_copy, epochs=5)
    shutil.copy(run_copy / "model.keras", checkpoint)  # intact, but no optimizer state
    before = snapshot(run_copy)
    with pytest.raises(UserError, match="is a model without training state"):
        trainer.resume(run_copy, epochs=5)
    assert snapshot(run_copy) == before


# 10 -----------------------------------------------------------------------------------------------------
def test_10_a_run_folder_in_use_is_refused_and_sigkill_frees_it(run_copy, camvid_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "train.py", "--resume", "--run-dir", str(run_copy), "--epochs", "200"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                run_folder.check_not_in_use(run_copy)
            except UserError:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the training process ended before it was seen holding the folder"
        message = f"run folder {run_copy} is in use by another process"
        with pytest.raises(UserError, match=message):
            trainer.resume(run_copy)
        with pytest.raises(UserError, match=message):
            trainer.train(tiny_config(camvid_dir, **RUN_SETTINGS, run_dir=str(run_copy)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_folder.check_not_in_use(run_copy)  # the kernel dropped the lock with the process
    config, run = run_folder.existing_run(run_copy)
    assert run.resume_epoch >= 2 and run.checkpoint is not None


# 11 -----------------------------------------------------------------------------------------------------
def test_11_unwritable_or_invalid_outputs_fail_first(trained, tmp_path):
    a_file = tmp_path / "notes.json"
    a_file.write_text("{}")
    long_name = tmp_path / ("z" * 300)
    cases = [(a_file, "folder", "exists and is not a folder"), (tmp_path, "file", "is a folder; give a file name"),
             (a_file / "out", None, f"cannot be created: {a_file} is a file, not a folder"),
             ("/proc/segkit-out", "folder", "cannot be written"), (long_name, None, "File name too long"),
             (tmp_path / ("w" * 252 + ".tflite"), "file", "File name too long"), ("", "folder", "--out is empty")]
    before = snapshot(tmp_path)
    for path, kind, message in cases:
        with pytest.raises(UserError, match=message):
            fileio.check_writable(path, "--out", kind=kind)
    assert snapshot(tmp_path) == before and sorted(tmp_path.iterdir()) == [a_file]
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    line = error_line(run_script("predict.py", "--model", str(trained), str(photo), "--out", str(a_file)))
    assert line == f"error: --out {str(a_file)!r} exists and is not a folder; give a folder"
    with pytest.raises(UserError, match="--run-dir .* is not a usable path \\(File name too long\\)"):
        run_folder.new_run(TrainConfig(run_dir=str(long_name)))


# 12 -----------------------------------------------------------------------------------------------------
def test_12_sizes_that_cannot_fit_in_memory_are_refused_with_advice(trained, camvid_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 16e9)
    with pytest.raises(UserError, match=r"--image-size 8192 8192 with --batch-size 2 needs about \d+\.\d GB to "
                                        r"train mobilenetv2_pix2pix .* 16\.0 GB of memory is available; use a "
                                        r"smaller --image-size, e.g. --image-size \d+ \d+ with --batch-size 1"):
        make_splits(tiny_config(camvid_dir, image_size=(8192, 8192), batch_size=2), replicas=1)
    with pytest.raises(UserError, match=r"use --batch-size \d+ or less"):
        memory.check_training_size("mobilenetv2_pix2pix", 64, (1024, 1024))
    memory.check_training_size("mobilenetv2_pix2pix", 8, (352, 480))  # the usual sizes pass

    photo = tmp_path / "big.png"
    Image.new("RGB", (6000, 4000), (90, 120, 60)).save(photo)
    out = tmp_path / "out"
    predictor = load_predictor(trained)
    jobs = predicting.collect([str(photo)])
    options = {"tta": "none", "scales": (1.0,), "input_size": None, "window": None}
    with pytest.raises(UserError, match=rf"running mobilenetv2_pix2pix on {photo} \(6000x4000\) needs about .* GB .* "
                                        r"use --window \d+ \d+ \(sliding tiles at full resolution\) or --image-size"):
        list(predicting.predict_jobs(predictor, jobs, out, options))
    assert not out.exists()
    predicting.check_memory(predictor, jobs, {**options, "window": (512, 512)})  # tiles fit
    predicting.check_memory(predictor, jobs, {**options, "input_size": (512, 768)})  # so does resizing


# 13 -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, message", [
    ("config.json", '{"config": {"epochs": 3', r"run config .*config.json is not readable JSON"),
    ("config.json", '{"config": {"dataset": "camvid", "model": "unet_tf", "batch_size": "many"}}',
     r"config.json is not a valid run config \(--batch-size must be an integer, got 'many'\)"),
    ("config.json", '{"config": {"epochs": 3}}', r"config.json is not a valid run config \(.*no dataset or model"),
    ("config.json", "[1, 2]", r"config.json does not hold a JSON object"),
    ("history.csv", "epoch,loss\n1,2\nzz,\x00\n", r"history.csv is corrupt"),
    ("history.csv", "epoch,loss,val_miou\n1,0.5,abc\n", r"history.csv is corrupt"),
    ("history.csv", "epoch,loss\n1,0.5\n", r"history.csv has no row for epoch\(s\) 2"),
])
def test_13_corrupt_config_or_history_is_named(run_copy, name, content, message):
    (run_copy / name).write_text(content)
    before = snapshot(run_copy)
    with pytest.raises(UserError, match=message):
        trainer.resume(run_copy, epochs=3)
    assert snapshot(run_copy) == before


def test_13_resume_with_bad_epochs_writes_nothing(run_copy):
    before = snapshot(run_copy)
    with pytest.raises(UserError, match="--epochs must be between 1 and 100000, got -5"):
        trainer.resume(run_copy, epochs=-5)
    assert snapshot(run_copy) == before


# 14 -----------------------------------------------------------------------------------------------------
def test_14_a_run_that_fails_on_bad_data_leaves_no_folder(camvid_dir, tmp_path):
    root = camvid_copy(camvid_dir, tmp_path)
    bad = root / "trainannot" / "f009.png"  # not the first mask: met during training, not before
    Image.open(bad).convert("RGB").save(bad)
    run_dir = tmp_path / "run"
    config = tiny_config(root, epochs=1, num_samples=0, run_dir=str(run_dir))
    with pytest.raises(UserError, match=rf'mask "{bad}" is a colour \(RGB\) PNG; expected one class value per pixel'):
        trainer.train(config)
    assert not run_dir.exists()
    run_dir.mkdir()  # the leftover of a run killed before its first epoch may be used again
    (run_dir / "config.json").write_text("{}")
    assert run_folder.new_run(config).dir == run_dir


# 15 -----------------------------------------------------------------------------------------------------
def test_15_palette_masks_give_their_indices(camvid_dir, tmp_path):
    root = camvid_copy(camvid_dir, tmp_path)
    masks = sorted((root / "valannot").iterdir())
    palette = [c for k in range(256) for c in (k * 7 % 256, k * 13 % 256, 200)]
    values = [np.asarray(Image.open(p)) for p in masks]
    for path, value in zip(masks, values):
        image = Image.fromarray(value, "P")
        image.putpalette(palette)
        image.save(path)
    got = [m for _, m in camvid.load(str(root), "val")[0].as_numpy_iterator()]
    assert [m.tolist() for m in got] == [np.where(v == 11, 255, v).tolist() for v in values]
    image = Image.fromarray(np.array([[1, 40], [12, 0]], np.uint8), "P")
    image.putpalette(palette)
    image.save(masks[0])
    with pytest.raises(UserError, match=r"has label values outside the dataset's classes: \[12 40\]"):
        with _data_errors(root):
            list(camvid.load(str(root), "val")[0].as_numpy_iterator())


def test_15_no_pairs_names_the_split_and_list(camvid_dir, tmp_path):
    root = camvid_copy(camvid_dir, tmp_path)
    (root / "val.txt").write_text("\n")
    with pytest.raises(UserError, match=rf"no image/mask pairs found for camvid split 'val' \({root / 'val.txt'} "
                                        r"lists none\)"):
        camvid.load(str(root), "val")


def test_15_all_void_training_labels_are_refused(camvid_dir, tmp_path):
    root = camvid_copy(camvid_dir, tmp_path)
    for path in (root / "trainannot").iterdir():
        Image.fromarray(np.full((64, 96), 11, np.uint8)).save(path)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"camvid/train: none of its 12 masks has a labelled pixel \(all are void / "
                                        r"ignore 255\); training would learn nothing"):
        trainer.train(tiny_config(root, **RUN_SETTINGS, run_dir=str(run_dir)))
    assert not run_dir.exists()


def test_15_limit_zero_and_infinite_lr(trained):
    with pytest.raises(UserError, match="--limit must be at least 1, got 0"):
        scoring.evaluate_model(trained, limit=0)
    for value in (float("inf"), float("nan")):
        with pytest.raises(UserError, match=f"--lr must be a finite number, got {value}"):
            validate(TrainConfig(lr=value))
