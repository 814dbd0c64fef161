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
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["street_jpg_mask.png", "street_jpg_overlay.png",
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


# =========================================================================================================
# Round 3 (issue 26): the principles, tested at the shared mechanisms. P1: nothing that the command did not
# write is deleted or overwritten, and no output lands on an input. P2: files that travel together stay
# together, whenever the process dies. P3: a resumed run is the unbroken run, whatever process resumes it.
# P4: every value is parsed strictly. P5: masks that look wrong are named before training. P6: long commands
# are estimated before work.

TRAIN_FLAGS = ["--model", "mobilenetv2_pix2pix", "--alpha", "0.35", "--image-size", "64", "64", "--batch-size", "4",
               "--precision", "float32", "--num-samples", "0", "--lr", "3e-3", "--dataset", "camvid"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def ctrl_c_as_in_a_terminal():
    """preexec_fn of the train.py processes these tests interrupt: SIGINT back to its default. pytest-xdist's
    workers ignore SIGINT, and an ignored signal stays ignored across exec, so under `make test` a child would
    never see the Ctrl-C the test sends (it ran on, and the test timed out)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# P1 ------------------------------------------------------------------------------------------------------
def test_p1_a_new_run_needs_an_empty_folder_or_a_run(camvid_dir, tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"someone's model")  # no config.json: not a run
    before = snapshot(folder)
    with pytest.raises(UserError, match=r"holds run files but no config.json|holds files that are not a run"):
        trainer.train(tiny_config(camvid_dir, **RUN_SETTINGS, run_dir=str(folder)))
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    with pytest.raises(UserError, match=r"holds files that are not a run's \(notes.txt\)"):
        trainer.train(tiny_config(camvid_dir, **RUN_SETTINGS, run_dir=str(folder)))
    assert snapshot(folder) == before


def test_p1_ctrl_c_during_fit_is_raised_between_steps():
    """loop_keras.DeferredInterrupt: the first SIGINT is noted, not raised, until the loop checks between steps;
    a second one raises at once; the handler before it is back afterwards; an ignored SIGINT stays ignored."""
    from segkit.training.loop_keras import DeferredInterrupt

    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (xdist's workers ignore it)
    interrupt = DeferredInterrupt()
    with pytest.raises(KeyboardInterrupt):
        with interrupt.active():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run: nothing raised yet
            assert interrupt.pending
            interrupt.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupt().active():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)  # the second: at once
            time.sleep(1)
            raise AssertionError("not interrupted")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with DeferredInterrupt().active() as ignored:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not ignored.pending
    finally:
        signal.signal(signal.SIGINT, before)


def test_p1_a_run_stopped_before_its_first_checkpoint_removes_only_what_it_wrote(camvid_dir, tmp_path):
    """SIGINT while the first epoch trains: the run's own files go, a file another process put in the folder
    meanwhile stays, and so does the folder that holds it."""
    run = tmp_path / "my_eval"
    proc = subprocess.Popen([sys.executable, "train.py", *TRAIN_FLAGS, "--data-dir", str(camvid_dir), "--epochs", "1",
                             "--steps-per-epoch", "100000", "--run-dir", str(run)],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run / "config.json").is_file() and proc.poll() is None:
            time.sleep(0.1)
        assert (run / "config.json").is_file(), proc.stderr.read() if proc.poll() is not None else "no config.json"
        (run / "notes.txt").write_text("another process's notes")
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_p1_no_output_over_an_input_or_a_file_predict_did_not_write(trained, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    image = np.zeros((40, 56, 3), np.uint8)
    Image.fromarray(image).save(photos / "street.png")
    Image.fromarray(image).save(photos / "street_mask.png")  # an input named like an output of street.png
    before = snapshot(photos)
    with pytest.raises(UserError, match=r"would write street_mask.png over an input"):
        predict_paths(trained / "model.keras", [photos], photos)
    out = tmp_path / "out"
    out.mkdir()
    (out / "street_overlay.png").write_bytes(b"a picture of mine")
    with pytest.raises(UserError, match=r"already holds street_overlay.png, which predict did not write"):
        predict_paths(trained / "model.keras", [photos / "street.png"], out)
    assert snapshot(photos) == before and (out / "street_overlay.png").read_bytes() == b"a picture of mine"
    (out / "street_overlay.png").unlink()
    predict_paths(trained / "model.keras", [photos / "street.png"], out)
    predict_paths(trained / "model.keras", [photos / "street.png"], out)  # its own outputs: replaced
    shot = tmp_path / "shot.keras"
    assert run_script("export.py", "--model", str(trained), "--format", "keras", "--out", str(shot)).returncode == 0
    assert "is the model being exported" in error_line(
        run_script("export.py", "--model", str(shot), "--format", "keras", "--out", str(shot)))


def test_p1_evaluate_out_is_one_set_of_outputs(trained, tmp_path):
    out = tmp_path / "eval"
    first = scoring.evaluate_model(trained, worst=2, samples=2)
    scoring.write_outputs(first, out)
    assert {"metrics.json", "worst.png", "worst.txt", "samples.png"} <= {p.name for p in out.iterdir()}
    scoring.write_outputs(scoring.evaluate_model(trained), out)  # no pictures this time: none stay behind
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json"]
    (out / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match=r"holds files that evaluate did not write \(mine.txt\)"):
        scoring.write_outputs(first, out)
    assert (out / "mine.txt").read_text() == "keep"


# P2 ------------------------------------------------------------------------------------------------------
KILL_DURING_SWAP = """
import os, signal, sys
from pathlib import Path
from segkit import fileio
final, point = Path(sys.argv[1]), sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_exchange, real_rename = fileio._exchange, Path.rename
if point == "after-exchange":
    fileio._exchange = lambda a, b: (real_exchange(a, b), die())
if point.startswith("fallback"):
    fileio._exchange = lambda a, b: False
    renames = []
    def rename(self, target):
        result = real_rename(self, target)
        renames.append(target)
        if (point == "fallback-aside" and len(renames) == 1) or (point == "fallback-moved" and len(renames) == 2):
            die()
        return result
    Path.rename = rename
with fileio.atomic_path(final) as tmp:
    tmp.mkdir()
    (tmp / "version").write_text("new")
    if point == "before-swap":
        die()
"""


@pytest.mark.parametrize("point", ["before-swap", "after-exchange", "fallback-aside", "fallback-moved"])
def test_p2_a_kill_at_any_step_of_a_folder_swap_leaves_old_or_new(tmp_path, point):
    final = tmp_path / "saved_model"
    final.mkdir()
    (final / "version").write_text("old")
    result = subprocess.run([sys.executable, "-c", KILL_DURING_SWAP, str(final), point], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    fileio.recover(final)  # what the next write (or a reader) does first
    assert (final / "version").read_text() in ("old", "new")
    expected = "old" if point in ("before-swap", "fallback-aside") else "new"
    assert (final / "version").read_text() == expected
    with fileio.atomic_path(final) as tmp:  # the next write cleans up after the dead writer
        tmp.mkdir()
        (tmp / "version").write_text("next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


KILL_DURING_PAIR = """
import os, signal, sys
from pathlib import Path
from segkit import fileio, sidecar
model, classes, point = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_write, real_swap = sidecar._write, fileio._swap_in
writes = []
def write(path, models):
    real_write(path, models)
    writes.append(path)
    if point == "after-both-entries" and len(writes) == 1:
        die()
sidecar._write = write
if point == "after-rename":
    fileio._swap_in = lambda tmp, final: (real_swap(tmp, final), die() if final == model else None)
with sidecar.write_pair(model) as pair:
    pair.tmp.write_bytes(("model for " + ",".join(classes)).encode())
    pair.payload = {"dataset_info": {"class_names": classes, "colors": [[0, 0, 0]] * len(classes)}, "export": {}}
    if point == "before-sidecar":
        die()
"""


@pytest.mark.parametrize("point", ["before-sidecar", "after-both-entries", "after-rename", "none"])
def test_p2_a_model_and_its_sidecar_stay_a_pair_whenever_the_writer_dies(tmp_path, point):
    from segkit import sidecar

    model = tmp_path / "m.tflite"
    for classes, at in (("a,b", "none"), ("x,y,z", point)):
        result = subprocess.run([sys.executable, "-c", KILL_DURING_PAIR, str(model), classes, at], cwd=ROOT,
                                env=ENV, capture_output=True, text=True, timeout=120)
        assert result.returncode == (0 if at == "none" else -signal.SIGKILL), result.stderr
    entry = sidecar.read(model)  # the entry of the file on disk, whichever it is
    assert model.read_bytes() == b"model for " + ",".join(entry["dataset_info"]["class_names"]).encode()
    expected = ["a", "b"] if point in ("before-sidecar", "after-both-entries") else ["x", "y", "z"]
    assert entry["dataset_info"]["class_names"] == expected


def test_p2_files_of_one_stem_keep_their_own_classes_and_a_foreign_sidecar_is_refused(trained, tmp_path):
    """m.tflite and m.keras share m.json, each with its own entry; a sidecar that describes another file, or
    whose class count is not the model's outputs, is one line."""
    from segkit import sidecar

    keras_file = tmp_path / "m.keras"
    assert run_script("export.py", "--model", str(trained), "--format", "keras", "--out", str(keras_file),
                      ).returncode == 0
    shutil.copy(PRETRAINED_TFLITE, tmp_path / "m.tflite")  # another model, another sidecar entry
    with sidecar.write_pair(tmp_path / "m.tflite") as pair:
        shutil.copy(PRETRAINED_TFLITE, pair.tmp)
        pair.payload = {"dataset_info": {"class_names": list(camvid.CLASSES_11), "colors": list(map(list, camvid.COLORS_11))}}
    assert load_predictor(keras_file).num_classes == 11 and load_predictor(tmp_path / "m.tflite").num_classes == 11
    keras_file.write_bytes(keras_file.read_bytes())  # same bytes: still its pair
    load_predictor(keras_file)
    other = tmp_path / "other.keras"
    shutil.copy(keras_file, other)
    shutil.copy(tmp_path / "m.json", tmp_path / "other.json")
    with pytest.raises(UserError, match=r"other.json describes m.keras, m.tflite, not other.keras"):
        load_predictor(other)
    legacy = tmp_path / "legacy.tflite"
    shutil.copy(PRETRAINED_TFLITE, legacy)
    names = [f"c{i}" for i in range(13)]
    (tmp_path / "legacy.json").write_text(json_dumps({"dataset_info": {"class_names": names, "colors": [[0, 0, 0]] * 13}}))
    with pytest.raises(UserError, match=r"has 11 output channels but its recorded classes are 13"):
        load_predictor(legacy)
    (tmp_path / "legacy.json").write_text(json_dumps({"dataset_info": {"class_names": names[:11]}}))
    with pytest.raises(UserError, match=r"legacy.json: colors must hold one \[r, g, b\]"):
        load_predictor(legacy)


def json_dumps(value) -> str:
    import json

    return json.dumps(value)


# P3 ------------------------------------------------------------------------------------------------------
RESUME_KEYS = ("loss", "val_loss", "miou", "val_miou", "lr")


def history_values(run_dir) -> list:
    import csv

    return [{k: float(r[k]) for k in RESUME_KEYS} for r in csv.DictReader(open(Path(run_dir) / "history.csv"))]


def train_process(camvid_dir, run_dir, *extra):
    return subprocess.Popen([sys.executable, "train.py", *TRAIN_FLAGS, "--data-dir", str(camvid_dir), "--epochs", "3",
                             "--steps-per-epoch", "5", "--run-dir", str(run_dir), *extra],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)


def wait_for(condition, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_p3_resumed_in_a_new_process_after_sigint_or_sigkill_mid_checkpoint_is_the_unbroken_run(camvid_dir,
                                                                                                 tmp_path):
    unbroken = train_process(camvid_dir, tmp_path / "unbroken")
    assert unbroken.wait(timeout=600) == 0, unbroken.stderr.read()[-2000:]
    expected = history_values(tmp_path / "unbroken")

    interrupted = tmp_path / "interrupted"  # SIGINT once epoch 1's checkpoint is there
    proc = train_process(camvid_dir, interrupted)
    assert wait_for(lambda: run_folder.latest_checkpoint(interrupted)[0] >= 1, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)

    killed = tmp_path / "killed"  # SIGKILL while epoch 2's checkpoint is being written
    proc = train_process(camvid_dir, killed)
    assert wait_for(lambda: any(p.name.startswith(fileio.TMP_PREFIX) and "epoch_002" in p.name
                                for p in (killed / "checkpoints").glob("*")) if (killed / "checkpoints").is_dir()
                    else False, proc)
    proc.kill()
    proc.wait()
    assert run_folder.latest_checkpoint(killed)[0] == 1

    for run in (interrupted, killed):
        resumed = run_script("train.py", "--resume", "--run-dir", str(run), timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        got = history_values(run)
        assert len(got) == 3 and not temporaries(run)
        for row_expected, row_got in zip(expected, got):
            for key in RESUME_KEYS:
                assert row_got[key] == pytest.approx(row_expected[key], rel=1e-6, abs=1e-7), (run.name, key)


def test_p3_resume_refuses_data_whose_classes_changed(tmp_path):
    """A folder dataset gains a label value after the run began: --resume stops before anything is written."""
    data_dir = tmp_path / "shapes"
    for split in ("train", "val"):
        (data_dir / split / "images").mkdir(parents=True)
        (data_dir / split / "masks").mkdir(parents=True)
        for k in range(4):
            mask = np.zeros((32, 32), np.uint8)
            mask[:, 16:] = 1 + k % 2
            Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(data_dir / split / "images" / f"{k}.png")
            Image.fromarray(mask).save(data_dir / split / "masks" / f"{k}.png")
    config = TrainConfig(dataset="folder", data_dir=str(data_dir), model="mobilenetv2_pix2pix", alpha=0.35,
                         image_size=(32, 32), batch_size=2, epochs=2, steps_per_epoch=1, num_samples=0,
                         precision="float32", run_dir=str(tmp_path / "run"))
    trainer.train(config)
    mask = np.asarray(Image.open(data_dir / "train" / "masks" / "0.png")).copy()
    mask[:16, :16] = 3  # a fourth class appears
    Image.fromarray(mask).save(data_dir / "train" / "masks" / "0.png")
    before = snapshot(tmp_path / "run")
    with pytest.raises(UserError, match=r"its data now has 4 classes .* but the run was trained on 3"):
        trainer.resume(tmp_path / "run", epochs=4)
    assert snapshot(tmp_path / "run") == before


# P4 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["train.py", "--epochs", "100000000000000000000"], "--epochs must be between 1 and 100000"),
    (["train.py", "--seed", "-1"], "--seed must be between 0 and 2147483647"),
    (["train.py", "--paste-prob", "2"], "--paste-prob must be between 0 and 1"),
    (["train.py", "--model", "vgg16_unet", "--aux-weight", "0.4"], "--aux-weight: vgg16_unet has no auxiliary head"),
    (["train.py", "--model", "ddrnet", "--aux-weight", "-1"], "--aux-weight must be at least 0"),
    (["train.py", "--data-option", "cache=maybe"], "cache='maybe' must be true or false"),
    (["train.py", "--dataset", "folder", "--data-dir", ".", "--data-option", "remap=no!"], "must be true or false"),
    (["predict.py", "--model", "m.keras", "x.png", "--opacity", "5"], "--opacity: must be from 0.0 to 1.0"),
    (["predict.py", "--model", "m.keras", "x.png", "--opacity", "nan"], "--opacity: must be from 0.0 to 1.0"),
    (["evaluate.py", "--model", "m.keras", "--threads", "10000"], "--threads: must be from 1 to"),
    (["evaluate.py", "--model", "m.keras", "--scales", "100"], "--scales must be from 0.1 to 8"),
    (["export.py", "--model", "m.keras", "--format", "tflite", "--out", "m.tflite", "--calibration-images", "0"],
     "--calibration-images: must be from 1 to"),
])
def test_p4_values_are_parsed_strictly(args, message):
    line = error_line(run_script(*args))
    assert message in line, line


def test_p4_a_config_file_that_is_not_utf8_or_another_datasets_run(trained, tmp_path):
    from segkit.cli import train
    from segkit.config import config_from_args, load_config_file

    bad = tmp_path / "c.json"
    bad.write_bytes(b'{"epochs": 3, "dataset": "\xff\xfe"}')
    with pytest.raises(UserError, match=r"is not UTF-8 text"):
        load_config_file(bad)
    base = load_config_file(trained)
    assert base.data_dir
    config = config_from_args(train.build_parser().parse_args(["--dataset", "sample"]), base)
    assert config.dataset == "sample" and config.data_dir is None and config.data_options == {}


# P5 ------------------------------------------------------------------------------------------------------
def test_p5_stray_mask_values_are_named_by_verify_and_train(tmp_path, capsys):
    data_dir = tmp_path / "binary"
    (data_dir / "images").mkdir(parents=True)
    (data_dir / "masks").mkdir()
    for k in range(6):
        mask = np.zeros((48, 48), np.uint8)
        mask[:, 24:] = 255
        mask[10, 24] = 128  # an anti-aliased edge pixel
        Image.fromarray(np.full((48, 48, 3), 30 * k, np.uint8)).save(data_dir / "images" / f"{k}.png")
        Image.fromarray(mask).save(data_dir / "masks" / f"{k}.png")
    assert run_verify(["--dataset", "folder", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "mask values 128 (6 pixels in 6 masks)" in err and "0/255 masks with anti-aliased edges" in err
    line = error_line(run_script("train.py", "--dataset", "folder", "--data-dir", str(data_dir), "--val-fraction",
                                 "0.3", "--run-dir", str(tmp_path / "run")))
    assert "mask values 128 (6 pixels in 6 masks)" in line and not (tmp_path / "run").exists()


# P6 ------------------------------------------------------------------------------------------------------
def test_p6_export_at_a_size_that_cannot_fit_is_refused_before_work(trained, tmp_path):
    start = time.time()
    line = error_line(run_script("export.py", "--model", str(trained), "--format", "tflite", "--image-size", "16384",
                                 "16384", "--out", str(tmp_path / "big.tflite")))
    assert "needs about" in line and "--image-size" in line and "--window" not in line, line
    assert time.time() - start < 120 and not list(tmp_path.iterdir())


# Smaller items of the round's probe ------------------------------------------------------------------------
def test_r3_odd_inputs_get_one_line(trained, camvid_dir, tmp_path):
    # A JPEG named .mp4 is refused before any output is written.
    fake = tmp_path / "clip.mp4"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(fake, format="JPEG")
    with pytest.raises(UserError, match=r"clip.mp4 is a JPEG image, not a video"):
        predicting.collect([str(fake)])
    # A dangling image link in a folder dataset is named, not dropped.
    data_dir = tmp_path / "folder"
    (data_dir / "images").mkdir(parents=True)
    (data_dir / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data_dir / "images" / "here.png")
    Image.fromarray(np.ones((32, 32), np.uint8)).save(data_dir / "masks" / "here.png")
    (data_dir / "images" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(UserError, match=r"gone.png is a link to .*nowhere.png, which does not exist"):
        from segkit import data

        data.load_dataset("folder", data_dir, "all")
    # history.csv with a column twice is refused, not rewritten.
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    text = (run / "history.csv").read_text().splitlines()
    text[0] = text[0] + ",loss"
    text[1:] = [line + ",1" for line in text[1:]]
    (run / "history.csv").write_text("\n".join(text) + "\n")
    before = snapshot(run)
    with pytest.raises(UserError, match=r"history.csv is corrupt .*names loss more than once"):
        trainer.resume(run, epochs=3)
    assert snapshot(run) == before
    # A SavedModel folder without its variables says what it lacks.
    broken = tmp_path / "sm"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a graph")
    with pytest.raises(UserError, match=r"cannot load SavedModel .*sm: \w+"):
        load_predictor(broken)
    # A .keras file that is not a segmentation model.
    import keras

    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    dense.save(tmp_path / "dense.keras")
    with pytest.raises(UserError, match=r"dense.keras does not run as a segmentation model|is not a segmentation model"):
        load_predictor(tmp_path / "dense.keras")


def test_r3_a_tiny_image_at_a_small_scale_trains(tmp_path):
    """A 1x1 image at --scale-min 0.1 scales to 1x1, not 0x0."""
    from segkit.data.pipeline import augment

    import tensorflow as tf

    image, mask = augment(tf.zeros((1, 1, 3)), tf.zeros((1, 1), tf.int32), tf.constant([1, 2], tf.int64),
                          image_size=(32, 32), scale_range=(0.1, 0.1))
    assert tuple(image.shape) == (32, 32, 3) and int(np.sum(mask.numpy() == 0)) == 1  # the pixel, padded to 32x32
