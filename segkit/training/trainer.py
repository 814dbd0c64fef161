"""Training a segmentation model into a self-describing run folder: the API behind train.py.

    result = trainer.train(TrainConfig(dataset="sample", epochs=25))      # a new run
    result = trainer.resume("runs/sample-...", epochs=40)                # continue (or extend) one
    print(result.best_miou, result.run_dir)

Order of work: run folder -> strategy and precision -> data -> the model's training loop -> result.
The loop is the one the model's record names (segkit.catalog): the Keras `fit` loop (segkit.training.loop_keras)
for every Keras model, the raw-TensorFlow GradientTape loop (segkit.training.loop_tf) for `unet_tf`. Both take (config, Run, Splits)
and return their RunRecorder. See segkit.training.run_folder for what the folder holds and how --resume works.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import keras

from segkit import catalog, data, fileio, runtime
from segkit.errors import UserError
from segkit.training import batchnorm, loop_keras, loop_tf, run_folder
from segkit.config import TrainConfig, validate
from segkit.training.splits import make_splits

# Keras warns that fit's shuffle flag does not apply to a tf.data.Dataset; ours shuffles itself.
warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")

# A model record's `loop` -> the function that trains it.
LOOPS = {"keras": loop_keras.fit, "tf": loop_tf.fit}


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    best_miou: float  # best val mIoU over the run's epochs (-inf if none finished)
    best_epoch: int
    epochs: int  # finished epochs
    stopped: str = ""  # why the run stopped early with an error ("" when it did not)


def train(config: TrainConfig) -> TrainResult:
    """Train a new run of `config` (validated here)."""
    validate(config)
    # First: MultiWorkerMirroredStrategy must be made before TensorFlow runs any op.
    strategy = runtime.make_strategy(config.strategy)
    run = run_folder.new_run(config, writer=runtime.worker_info()["is_chief"])
    run.strategy = strategy
    return _train(config, run)


def resume(run_dir, epochs: int | None = None) -> TrainResult:
    """Continue the run in `run_dir` from its newest checkpoint; `epochs` changes the total."""
    config, run = run_folder.existing_run(run_dir, epochs, writer=runtime.worker_info()["is_chief"])
    run.strategy = runtime.make_strategy(config.strategy)
    if run.resume_epoch >= config.epochs:
        print(f"{run.dir} already finished {run.resume_epoch} of {config.epochs} epochs; pass --epochs N to train longer")
        return _result(run, None, config)
    print(f"resuming {run.dir} from epoch {run.resume_epoch}" + (f" ({run.checkpoint})" if run.checkpoint else ""))
    return _train(config, run)


def _check_loop(config, run) -> None:
    workers = runtime.worker_info()["num_workers"]
    replicas = run.strategy.num_replicas_in_sync
    own_loop = catalog.model(config.model).loop == "tf"
    if own_loop and config.init_from:
        raise UserError(f"--init-from works with the Keras models; {config.model} resumes from its own checkpoints")
    if own_loop and (replicas > 1 or workers > 1):
        raise UserError(f"{config.model} trains in its own loop without tf.distribute; use --strategy none "
                        f"(got {replicas} replicas on {workers} workers)")


def _train(config: TrainConfig, run: run_folder.Run) -> TrainResult:
    policy = runtime.set_precision(config.precision, config.model)
    keras.utils.set_random_seed(config.seed)
    _check_loop(config, run)
    run.created = run.writer and not run.dir.exists()
    before = set() if not run.dir.is_dir() else {p.name for p in run.dir.iterdir()}
    run_folder.lock(run)
    try:
        splits = make_splits(config, run.strategy.num_replicas_in_sync, run.resume_epoch)
        run_folder.check_same_classes(run, splits.info)
        if run.writer:
            fileio.write_json(run.dir / "config.json", {
                "config": config.to_json(), "dataset_info": splits.info.to_dict(),
                "class_weights": splits.class_weights, "precision_policy": policy,
                # BatchNormalization's training kernel (segkit.training.batchnorm): TensorFlow's fused one, or
                # Keras' own (SEGKIT_FUSED_BN=off); the Keras loop only.
                "fused_batchnorm": catalog.model(config.model).loop == "keras" and batchnorm.enabled(),
                "replicas": run.strategy.num_replicas_in_sync, "workers": runtime.worker_info()["num_workers"],
                "data_sharding": splits.sharding, "val_data_sharding": splits.val_sharding,
                "num_train_images": splits.num_train, "steps_per_epoch": splits.steps,
                "versions": runtime.library_versions()})
        if run.resume_epoch:
            run_folder.trim_history(run)
        fit = LOOPS[catalog.model(config.model).loop]
        # A bad file met during training (not every file is read before it starts) ends in one line.
        with data.data_errors_as_user_errors(splits.info, splits.val_info or splits.info):
            recorder = fit(config, run, splits)
        runtime.wait_for_workers(run.strategy)
    except BaseException:
        # A new run that stops before its first checkpoint leaves nothing of its own behind, so the same
        # --run-dir can be used again once the problem is fixed; what it did not write stays.
        if run.writer and not run.resume_epoch and run_folder.latest_checkpoint(run.dir)[1] is None:
            run_folder.unlock(run)
            written = {p.name for p in run.dir.iterdir()} - before if run.dir.is_dir() else set()
            run_folder.remove_unstarted(run, written & set(run_folder.RUN_FILES))
        raise
    finally:
        run_folder.unlock(run)
    return _result(run, recorder, config)


def _result(run, recorder, config) -> TrainResult:
    if recorder is None:
        history = run.history
        finished = [float(r["val_miou"]) for r in history if r.get("val_miou") not in (None, "", "nan")]
        best = max(finished, default=float("-inf"))
        best_epoch = next((int(r["epoch"]) for r in history if r.get("val_miou") not in (None, "", "nan")
                           and float(r["val_miou"]) == best), 0)
        return TrainResult(run.dir, best, best_epoch, run.resume_epoch)
    stopped = recorder.nonfinite_message() if recorder.nonfinite else ""
    return TrainResult(run.dir, recorder.best, recorder.best_epoch, len(recorder.history), stopped)
