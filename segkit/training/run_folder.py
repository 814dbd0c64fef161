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
import os
import time
import zipfile
from pathlib import Path

from segkit import fileio
from segkit.errors import UserError
from segkit.inference import loading
from segkit.config import TrainConfig, validate

FIXED_COLUMNS = ["epoch", "loss", "val_loss", "miou", "val_miou", "lr", "train_images_per_sec", "epoch_seconds"]
# Every name a run writes in its folder (the two loops' models included): a new run's folder may hold these
# and nothing else, and a run that stops before its first checkpoint removes these and nothing else.
RUN_FILES = ("config.json", "history.csv", "curves.png", "samples", "logs", "checkpoints", "model.keras",
             "saved_model")


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
    classes: list | None = None  # the class names a resumed run recorded (its data must still have them)
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
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise ValueError(f"the header names {', '.join(repeated)} more than once")
            rows = list(reader)
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
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
        if foreign:
            raise UserError(f"--run-dir {str(run_dir)!r} holds files that are not a run's ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder")
        if any(run_dir.iterdir()) and not (run_dir / "config.json").is_file():
            raise UserError(f"--run-dir {str(run_dir)!r} holds run files but no config.json (not a run this "
                            "toolkit can continue); give a new or empty folder")
        if has_results(run_dir):
            raise UserError(f"--run-dir {str(run_dir)!r} already holds a run; use --resume to continue it "
                            "or choose a new folder")
    return Run(run_dir, writer=writer)


def remove_unstarted(run: Run, created: set) -> None:
    """Undo a new run that stopped before its first checkpoint: delete the names in `created` (what this
    process wrote, of RUN_FILES) and then the folder if this process made it and nothing else is in it.
    Files another process put there meanwhile stay, and so does their folder."""
    for name in created:
        fileio.remove(run.dir / name)
    if run.created:
        try:
            run.dir.rmdir()
        except OSError:
            pass  # not empty: someone else's files are there


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
    classes = (stored.get("dataset_info") or {}).get("class_names")
    return config, Run(run_dir, resume_epoch=epoch, checkpoint=checkpoint, history=history, writer=writer,
                       classes=list(classes) if isinstance(classes, list) else None)


def check_same_classes(run: Run, info) -> None:
    """A UserError, before anything is written, when a resumed run's data now has other classes than the run
    recorded (a new label value in a folder dataset, another dataset under the same path): its model has one
    output per recorded class, and its config.json is the record of what it was trained on."""
    if run.classes is not None and list(info.class_names) != run.classes:
        raise UserError(f"{run.dir}: its data now has {info.num_classes} classes ({', '.join(info.class_names[:5])}"
                        f"{', ...' if info.num_classes > 5 else ''}) but the run was trained on {len(run.classes)} "
                        f"({', '.join(run.classes[:5])}{', ...' if len(run.classes) > 5 else ''}); --resume needs "
                        "the same classes (start a new run, e.g. with --init-from for the weights)")


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


def trim_history(run: Run) -> None:
    """Write back the history rows up to the checkpoint a resumed run starts from."""
    if run.writer:
        write_history(run.dir, run.history)
