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
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import visualize

FIXED_COLUMNS = ["epoch", "loss", "val_loss", "miou", "val_miou", "lr", "train_images_per_sec", "epoch_seconds"]


def read_history(run_dir: Path) -> list:
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_history(run_dir: Path, rows: list) -> None:
    columns = list(FIXED_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    tmp = Path(run_dir) / ".history.csv.tmp"
    tmp.write_text(buffer.getvalue())
    tmp.replace(Path(run_dir) / "history.csv")


def latest_checkpoint(run_dir: Path):
    """(epoch, path) of the newest complete checkpoint, or (0, None)."""
    folder = Path(run_dir) / "checkpoints"
    found = sorted(p for p in folder.glob("epoch_*") if not p.name.startswith("."))
    if not found:
        return 0, None
    return int(found[-1].name.split("_")[1].split(".")[0]), found[-1]


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class RunRecorder:
    """Per-epoch bookkeeping shared by the Keras fit loop and the raw-TF loop.

    save_checkpoint(path): write resumable state to `path` (a new name; the recorder renames it).
    save_best(folder): write the best model into `folder` (the run folder; a temporary one when not the writer).
    predict(images) -> logits: for the sample pictures.
    """

    def __init__(self, run_dir, *, info, sample_images, sample_masks, predict, save_checkpoint, save_best,
                 checkpoint_suffix: str, steps_per_epoch: int, global_batch: int, patience: int = 0,
                 history=None, writer: bool = True, keep: str = "best"):
        self.run_dir = Path(run_dir)
        self.info = info
        self.sample_images, self.sample_masks = sample_images, sample_masks
        self.predict = predict
        self.save_checkpoint_fn, self.save_best_fn = save_checkpoint, save_best
        self.suffix = checkpoint_suffix
        self.steps, self.global_batch = steps_per_epoch, global_batch
        self.patience = patience
        self.history = list(history or [])
        self.writer = writer
        self.keep = keep
        finished = [float(r["val_miou"]) for r in self.history if r.get("val_miou") not in (None, "", "nan")]
        self.best = max(finished) if finished else -math.inf
        self.best_epoch = next((int(r["epoch"]) for r in self.history
                                if r.get("val_miou") not in (None, "", "nan") and float(r["val_miou"]) == self.best), 0)
        self.nonfinite = None
        self.stop = False
        self.skip = min(2, max(0, steps_per_epoch - 1))  # batches left out of the throughput (warm-up)

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
            if self.writer:
                self.save_best_fn(self.run_dir)
            else:
                with tempfile.TemporaryDirectory() as scratch:
                    self.save_best_fn(Path(scratch))
        self.checkpoint(epoch)
        if self.patience and epoch - self.best_epoch >= self.patience:
            print(f"early stopping: val mIoU has not improved for {self.patience} epochs "
                  f"(best {self.best:.4f} at epoch {self.best_epoch})")
            self.stop = True

    def checkpoint(self, epoch: int) -> None:
        folder = self.run_dir / "checkpoints"
        if not self.writer:
            # Every worker takes part in the save; only the chief keeps it.
            with tempfile.TemporaryDirectory() as scratch:
                self.save_checkpoint_fn(Path(scratch) / f"epoch_{epoch:03d}{self.suffix}")
            return
        folder.mkdir(exist_ok=True)
        final = folder / f"epoch_{epoch:03d}{self.suffix}"
        tmp = folder / f".tmp-epoch_{epoch:03d}{self.suffix}"
        self.save_checkpoint_fn(tmp)
        tmp.replace(final) if tmp.is_file() else tmp.rename(final)
        for old in folder.glob("epoch_*"):
            if old != final:
                shutil.rmtree(old) if old.is_dir() else old.unlink()

    def draw(self, epoch: int) -> None:
        visualize.plot_curves(self.history, self.run_dir / "curves.png")
        if self.sample_images is None or not len(self.sample_images):
            return
        logits = self.predict(self.sample_images)
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


def trim_history(run_dir: Path, last_epoch: int, write: bool = True) -> list:
    """History rows up to `last_epoch` (the checkpoint a resumed run starts from); `write` saves them back."""
    rows = [r for r in read_history(run_dir) if int(r["epoch"]) <= last_epoch]
    if write:
        write_history(run_dir, rows)
    return rows
