"""The per-epoch bookkeeping both training loops share: timing, history.csv, the pictures, the run's model
and the checkpoint, written in the order that lets a run be killed at any moment (segkit.training.run_folder
describes the folder and how --resume reads it back).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from segkit import fileio, visualize
from segkit.config import TrainConfig
from segkit.training.run_folder import Run, latest_checkpoint, write_history


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
