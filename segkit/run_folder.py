"""What a run writes, and how it survives being killed.

A run folder holds:

    config.json            every setting, library versions, the dataset's classes
    history.csv            one row per finished epoch
    model.keras            best model by val mIoU (unet_tf: best/ SavedModel + checkpoint)
    checkpoints/epoch_NNN  last finished epoch with optimizer state, for --resume
    curves.png, samples/epoch_NNN.png, logs/ (TensorBoard)

Crash safety: at the end of epoch N, history.csv (with row N) is replaced atomically
first, then the checkpoint for N is written under a temporary name and renamed, then
older checkpoints are deleted. A resumed run starts from the newest complete
checkpoint N and drops history rows after N, so a run killed at any moment loses at most
the epoch in progress and never lists an epoch twice.

Several workers (tf.distribute.MultiWorkerMirroredStrategy): only the chief (`writer=True`)
writes the folder. The others make the same saves into a temporary folder deleted at once
(TensorFlow's multi-worker guide: saving may run collective ops, so every worker saves), and
read history.csv on resume, so that all agree on the best epoch.

Checks before anything is touched (`new_run`, `existing_run`): a folder that already holds a run with
results (a history row, a checkpoint or a model) is not reused for a new one, while the leftover of a run
stopped before its first epoch is; a run to resume must have a valid config.json, a readable history.csv
with a row for every epoch of its checkpoint, and a checkpoint that is a complete training checkpoint,
unless it has no results yet; a run folder in use by another process is refused (`lock`, an flock on the
folder that the kernel releases when its process dies, SIGKILL included).
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import math
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from errors import UserError
from segkit import fileio, loading, visualize
from segkit.config import TrainConfig, validate

FIXED_COLUMNS = ["epoch", "loss", "val_loss", "miou", "val_miou", "lr", "train_images_per_sec", "epoch_seconds"]


@dataclasses.dataclass
class Run:
    """Where and how this process trains: the folder, what it resumes from, whether it writes."""

    dir: Path
    strategy: object = None  # the tf.distribute strategy
    resume_epoch: int = 0  # finished epochs the run starts after
    checkpoint: Path | None = None  # the checkpoint of `resume_epoch` (None: start from scratch)
    history: list = dataclasses.field(default_factory=list)  # rows of finished epochs
    writer: bool = True  # False on the non-chief workers of a multi-worker run
    created: bool = False  # this process made the folder (removed again if the run cannot start)
    _lock_file: int | None = None  # the folder's file descriptor while this process holds its lock


def read_history(run_dir: Path) -> list:
    """The rows of `run_dir`/history.csv (none if there is no file); a UserError naming the file when it is
    not what `write_history` writes: a header with `epoch`, then one row per finished epoch, every value a
    number (or empty), epochs distinct and at least 1."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        epochs = set()
        for number, row in enumerate(rows, 2):
            if None in row or None in row.values():
                raise ValueError(f"line {number} has {'more' if None in row else 'fewer'} values than the header")
            for value in row.values():
                if value != "":
                    float(value)
            epoch = int(row["epoch"])
            if epoch < 1 or epoch in epochs:
                raise ValueError(f"line {number}: epoch {epoch} is {'repeated' if epoch in epochs else 'not >= 1'}")
            epochs.add(epoch)
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is corrupt ({type(exc).__name__}: {exc}); restore it or start a new run") from None
    return rows


def write_history(run_dir: Path, rows: list) -> None:
    columns = list(FIXED_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    fileio.write_text(Path(run_dir) / "history.csv", buffer.getvalue())


def latest_checkpoint(run_dir: Path):
    """(epoch, path) of the newest complete checkpoint, or (0, None)."""
    folder = Path(run_dir) / "checkpoints"
    found = sorted(p for p in folder.glob("epoch_*") if not p.name.startswith("."))
    if not found:
        return 0, None
    return int(found[-1].name.split("_")[1].split(".")[0]), found[-1]


def check_checkpoint(path: Path) -> None:
    """A UserError naming `path` unless it is a complete checkpoint: an intact .keras archive, or a raw-TF
    checkpoint folder with its index."""
    hint = ("delete it to resume from an earlier one if there is one, or start a new run with --init-from "
            "on the run's model.keras")
    if path.suffix == ".keras":
        try:
            loading.check_keras_file(path, "checkpoint")
            with zipfile.ZipFile(path) as archive:
                stored = json.loads(archive.read("config.json"))
        except UserError as exc:
            raise UserError(f"{exc}; {hint}") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise UserError(f"checkpoint {path} is damaged ({type(exc).__name__}: {exc}); {hint}") from None
        if not isinstance(stored, dict) or not stored.get("compile_config"):
            raise UserError(f"checkpoint {path} is a model without training state (no optimizer), not a "
                            f"checkpoint; {hint}")
    elif not (path / "ckpt.index").is_file():
        raise UserError(f"checkpoint {path} is incomplete (no ckpt.index); {hint}")


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.dataset}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def has_results(run_dir: Path) -> bool:
    """True if the run in `run_dir` finished an epoch: a history row, a checkpoint or a saved model."""
    run_dir = Path(run_dir)
    try:
        rows = read_history(run_dir)
    except UserError:
        return True  # a damaged history.csv is still someone's record: not ours to overwrite
    return bool(rows) or latest_checkpoint(run_dir)[1] is not None or any(
        (run_dir / name).exists() for name in ("model.keras", "saved_model"))


def new_run(config: TrainConfig, writer: bool = True) -> Run:
    """A Run for a new training run in `config.run_dir` (or runs/<dataset>-<model>-<time>); the folder is made
    by `start`. Refuses a folder in use by another process, or one that holds a run with results; the
    leftover of a run that was killed before it finished an epoch (config.json, logs) is used again."""
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    # Only the chief writes the folder (and probes it); in a multi-worker run the others may find its
    # config.json already.
    if not writer:
        return Run(run_dir, writer=writer)
    fileio.check_writable(run_dir, "--run-dir", kind="folder")  # a file, a name too long, no permission
    if run_dir.is_dir():
        check_not_in_use(run_dir)
        if (run_dir / "config.json").exists() and has_results(run_dir):
            raise UserError(f"--run-dir {str(run_dir)!r} already holds a run; use --resume to continue it "
                            "or choose a new folder")
    return Run(run_dir, writer=writer)


def existing_run(run_dir, epochs: int | None = None, writer: bool = True) -> tuple:
    """(config, Run) to continue the run in `run_dir`, checked before anything in it is touched.

    `epochs` (optional) changes the total number of epochs. Refused in one line: no run there, a corrupt
    config.json or history.csv, a damaged checkpoint, finished epochs without any checkpoint.
    """
    run_dir = Path(run_dir)
    try:
        found = (run_dir / "config.json").is_file()
    except OSError as exc:  # e.g. a name too long
        raise UserError(f"--run-dir {str(run_dir)!r} is not a usable path ({exc.strerror or exc})") from None
    if not found:
        raise UserError(f"--run-dir {str(run_dir)!r} has no config.json to resume from")
    stored = fileio.read_json(run_dir / "config.json", "run config")
    try:
        missing = [key for key in ("dataset", "model") if key not in stored["config"]]
        if missing:
            raise ValueError(f"no {' or '.join(missing)}")
        config = TrainConfig.from_json(stored["config"])
        validate(config)
    except (KeyError, TypeError, ValueError) as exc:  # UserError from validate included
        reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"{run_dir / 'config.json'} is not a valid run config ({reason}); restore it or start a "
                        "new run") from None
    if epochs is not None:
        config.epochs = epochs
        validate(config)
    if writer:  # the other workers of a multi-worker run share the folder the chief holds
        check_not_in_use(run_dir)
    history = read_history(run_dir)
    epoch, checkpoint = latest_checkpoint(run_dir)
    finished = max((int(r["epoch"]) for r in history), default=0)
    if checkpoint is None and has_results(run_dir):
        what = f"lists {finished} finished epoch(s) in history.csv" if finished else "holds a trained model"
        raise UserError(f"{run_dir} {what} but has no checkpoint in {run_dir / 'checkpoints'} to resume from; "
                        f"nothing was changed (start a new run, or one with --init-from {run_dir} to start from "
                        "its model)")
    if checkpoint is not None:
        check_checkpoint(checkpoint)
        missing = sorted(set(range(1, epoch + 1)) - {int(r["epoch"]) for r in history})
        if missing:
            raise UserError(f"{run_dir / 'history.csv'} has no row for epoch(s) {', '.join(map(str, missing[:5]))}"
                            f"{' ...' if len(missing) > 5 else ''} that checkpoint {checkpoint.name} finished; "
                            "restore it (the best model is chosen from it) or start a new run; nothing was changed")
    history = [r for r in history if int(r["epoch"]) <= epoch]
    return config, Run(run_dir, resume_epoch=epoch, checkpoint=checkpoint, history=history, writer=writer)


def lock(run: Run) -> None:
    """Take the run folder for this process, or raise a UserError if another process has it.

    An advisory flock on the folder itself (no lock file is left behind): the kernel drops it when the
    process ends in any way, so a killed run never leaves the folder stuck. Only the writer (the chief)
    locks."""
    if not run.writer:
        return
    run.dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(run.dir, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise UserError(_in_use(run.dir)) from None
    run._lock_file = handle


def _in_use(run_dir) -> str:
    return (f"run folder {run_dir} is in use by another process (a training run); wait for it to finish or "
            "stop it first")


def check_not_in_use(run_dir: Path) -> None:
    """A UserError if another process holds `run_dir`'s lock (see `lock`); the folder is left as it is."""
    try:
        handle = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return  # not there (yet): nobody holds it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(_in_use(run_dir)) from None
    finally:
        os.close(handle)  # drops the lock taken just now, if any


def unlock(run: Run) -> None:
    if run._lock_file is not None:
        os.close(run._lock_file)  # closing drops the flock
        run._lock_file = None


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class RunRecorder:
    """Per-epoch bookkeeping shared by the Keras fit loop and the raw-TF loop.

    run: the Run (folder, history so far, writer or not); config: patience and keep;
    splits: steps per epoch, global batch, dataset info and the sample images drawn each epoch;
    saver: what the loop knows how to save, with
        suffix                   ".keras" or "" (a checkpoint folder),
        save_checkpoint(path)    resumable state into `path` (a temporary name; the recorder renames it),
        save_model(path)         the model kept as the run's result (`model_path(run_dir)`) into `path`,
        model_path(run_dir)      where that model lives in a run folder,
        predict(images) -> logits, for the sample pictures.
    """

    def __init__(self, run: Run, config: TrainConfig, splits, saver):
        self.run_dir = Path(run.dir)
        self.info = splits.info
        self.sample_images, self.sample_masks = splits.sample_images, splits.sample_masks
        self.saver = saver
        self.steps, self.global_batch = splits.steps, splits.global_batch
        self.patience, self.keep = config.patience, config.keep
        self.history = list(run.history)
        self.writer = run.writer
        finished = [float(r["val_miou"]) for r in self.history if r.get("val_miou") not in (None, "", "nan")]
        self.best = max(finished) if finished else -math.inf
        self.best_epoch = next((int(r["epoch"]) for r in self.history
                                if r.get("val_miou") not in (None, "", "nan") and float(r["val_miou"]) == self.best), 0)
        self.nonfinite = None
        self.stop = False
        self.skip = min(2, max(0, self.steps - 1))  # batches left out of the throughput (warm-up)

    # --- timing -----------------------------------------------------------
    def epoch_begin(self):
        self.t_epoch = time.perf_counter()
        self.t_steady = self.t_epoch if self.skip == 0 else None
        self.t_last = None

    def batch_end(self, batch: int, loss) -> bool:
        """Record timing; returns False when the loss is not finite (the caller stops)."""
        now = time.perf_counter()
        if batch + 1 == self.skip:
            self.t_steady = now
        self.t_last = now
        if loss is not None and not math.isfinite(float(loss)):
            self.nonfinite = (len(self.history) + 1, batch + 1, float(loss))
            self.stop = True
            return False
        return True

    def images_per_sec(self) -> float:
        if self.t_steady is None or self.t_last is None or self.t_last <= self.t_steady:
            return float("nan")
        return (self.steps - self.skip) * self.global_batch / (self.t_last - self.t_steady)

    # --- end of epoch -----------------------------------------------------
    def epoch_end(self, epoch: int, logs: dict, lr: float) -> None:
        """`epoch` is 1-based. Writes history, pictures, best model and checkpoint, in that order."""
        if self.nonfinite or not all(math.isfinite(float(logs[k])) for k in ("loss",) if k in logs):
            self.nonfinite = self.nonfinite or (epoch, self.steps, float(logs.get("loss", float("nan"))))
            self.stop = True
            return
        row = {"epoch": epoch, "lr": lr, "train_images_per_sec": round(self.images_per_sec(), 3),
               "epoch_seconds": round(time.perf_counter() - self.t_epoch, 2)}
        row.update({k: float(v) for k, v in logs.items()})
        self.history.append({k: _fmt(v) for k, v in row.items()})
        val_miou = float(logs.get("val_miou", float("nan")))
        improved = math.isfinite(val_miou) and val_miou > self.best
        if improved:
            self.best, self.best_epoch = val_miou, epoch
        if self.writer:
            write_history(self.run_dir, self.history)
            self.draw(epoch)
        if improved or self.keep == "last":
            self._save(self.saver.model_path(self.run_dir), self.saver.save_model)
        folder = self.run_dir / "checkpoints"
        final = folder / f"epoch_{epoch:03d}{self.saver.suffix}"
        self._save(final, self.saver.save_checkpoint)
        if self.writer:
            for old in folder.glob("epoch_*"):
                if old != final:
                    fileio.remove(old)
        if self.patience and epoch - self.best_epoch >= self.patience:
            print(f"early stopping: val mIoU has not improved for {self.patience} epochs "
                  f"(best {self.best:.4f} at epoch {self.best_epoch})")
            self.stop = True

    def _save(self, final: Path, save) -> None:
        """`save(path)` into `final` atomically; a non-writer saves into a scratch folder deleted at once
        (every worker takes part in a save, only the chief keeps it)."""
        if not self.writer:
            with tempfile.TemporaryDirectory() as scratch:
                save(Path(scratch) / final.name)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        with fileio.atomic_path(final) as tmp:
            save(tmp)

    def draw(self, epoch: int) -> None:
        visualize.plot_curves(self.history, self.run_dir / "curves.png")
        if self.sample_images is None or not len(self.sample_images):
            return
        logits = self.saver.predict(self.sample_images)
        preds = np.argmax(logits, -1) if logits.shape[-1] > 1 else (logits[..., 0] > 0).astype(np.int32)
        rows = list(zip(self.sample_images, self.sample_masks, preds))
        picture = visualize.stitch(rows, self.info.class_names, self.info.colors)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        visualize.save_image(picture, self.run_dir / "samples" / f"epoch_{epoch:03d}.png")

    def nonfinite_message(self) -> str:
        epoch, batch, value = self.nonfinite
        _, path = latest_checkpoint(self.run_dir)
        kept = f"; the last good checkpoint is {path}" if path else "; no checkpoint had been written yet"
        return f"stopping: the loss became {value} at epoch {epoch}, batch {batch}{kept} (try a lower --lr)"


def trim_history(run: Run) -> None:
    """Write back the history rows up to the checkpoint a resumed run starts from."""
    if run.writer:
        write_history(run.dir, run.history)
