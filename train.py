"""Train a segmentation model and write a self-describing run folder.

    python train.py                                   # default model on the bundled CamVid sample
    python train.py --dataset voc --data-dir ~/data/VOCdevkit --epochs 50 --image-size 320 320
    python train.py --dataset camvid --data-dir ../shared/datasets/camvid --loss tversky_cce --class-weights auto
    python train.py --resume --run-dir runs/camvid-mobilenetv2_pix2pix-20261121-120000

Order of work: config -> dataset -> model -> loss and metrics -> compile -> fit -> save.
See run_folder.py for what the run folder holds and how --resume works.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import cli
import data
import losses
import metrics
import models
import run_folder
import runtime
from config import TrainConfig, add_config_flags, config_from_args, library_versions, write_json_atomic
from data.common import evenly_spaced, shard_files
from data.pipeline import pad_to_multiple, prepare
from errors import UserError

# Keras warns that fit's shuffle flag does not apply to a tf.data.Dataset; ours shuffles itself.
warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last checkpoint, with its config.json")
    return parser.parse_args(argv)


def setup_run(args):
    """(config, run_dir, resume_epoch, checkpoint path) from the flags or from a run to resume."""
    if args.resume:
        if not args.run_dir:
            raise UserError("--resume needs --run-dir pointing at the run to continue")
        run_dir = Path(args.run_dir)
        if not (run_dir / "config.json").is_file():
            raise UserError(f"--run-dir {str(run_dir)!r} has no config.json to resume from")
        stored = TrainConfig.from_json(json.loads((run_dir / "config.json").read_text())["config"])
        # Only the epoch count may be changed on resume (to train longer); all else comes from the run.
        if args.epochs:
            stored.epochs = args.epochs
        epoch, checkpoint = run_folder.latest_checkpoint(run_dir)
        return stored, run_dir, epoch, checkpoint
    config = config_from_args(args)
    if config.run_dir:
        run_dir = Path(config.run_dir)
        # Only the chief writes the folder; in a multi-worker run the others may find its config.json already.
        if (run_dir / "config.json").exists() and runtime.worker_info()["is_chief"]:
            raise UserError(f"--run-dir {str(run_dir)!r} already holds a run; use --resume to continue it "
                            "or choose a new folder")
    else:
        run_dir = Path("runs") / f"{config.dataset}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config, run_dir, 0, None


def class_weights(config, train_raw, info):
    if config.class_weights is None:
        return None
    if config.class_weights == "auto":
        counts = data.class_pixel_counts(train_raw, info.num_classes)
        weights = losses.class_weights_from_counts(counts)
        print("class weights (median frequency):", ", ".join(f"{n}={w:.2f}" for n, w in zip(info.class_names, weights)))
        return [float(w) for w in weights]
    try:
        weights = [float(w) for w in config.class_weights.split(",")]
    except ValueError:
        raise UserError(f"--class-weights must be 'auto' or comma-separated numbers, got {config.class_weights!r}") from None
    if len(weights) != info.num_classes:
        raise UserError(f"--class-weights has {len(weights)} values but {info.name} has {info.num_classes} classes")
    return weights


def learning_rate(config, steps_per_epoch):
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(config.lr, max(1, total), end_learning_rate=0.0, power=0.9)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.lr, max(1, total - warmup), alpha=0.01,
        warmup_target=config.lr if warmup else None, warmup_steps=warmup)


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)


def worker_share(config, workers, split, raw, min_examples=1):
    """(dataset, sharding): the part of `split` this worker reads, and how the split is shared between workers.

    "files": a loader with a file list is made again inside `shard_files`, so each worker decodes only its own
    files (tf.data's auto-sharding is then turned off). "data": generated or tfds data, or a share smaller than
    `min_examples`; every worker makes all of it and keeps its part (tf.data's DATA auto-shard). "none": one
    worker. Each worker's training batches hold the global batch (tf.distribute splits them between the
    replicas), so a training share needs at least that many examples.
    """
    if workers["num_workers"] == 1:
        return raw, "none"
    with shard_files(workers["num_workers"], workers["rank"]) as sharded:
        part, _ = data.load_dataset(config.dataset, config.data_dir, split)
    if sharded and int(part.cardinality()) >= min_examples:
        return part, "files"
    return raw, "data"


def with_shard_policy(ds, sharding):
    """`ds` with the tf.data auto-shard policy for `worker_share`'s answer."""
    if sharding == "none":
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if sharding == "files" else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def build_and_compile(config, info, steps, weights):
    """The model, loss, metrics and optimizer of `config`, compiled; call it inside the strategy's scope.

    bench/train_speed.py times the model this returns, so a change here shows in its figures.
    """
    # model
    model = models.build_model(config.model, info.num_classes, input_shape=(None, None, 3),
                               encoder_weights=None if config.encoder_weights == "none" else config.encoder_weights,
                               **config.model_options())
    if config.init_from:
        init_weights(model, config.init_from)
    # loss and metrics
    loss = losses.get_loss(config.loss, info.num_classes, ignore_index=data.IGNORE, class_weights=weights,
                           **config.loss_params())
    miou = metrics.ConfusionMatrix(info.num_classes, ignore_index=data.IGNORE, name="miou")
    optimizer = keras.optimizers.AdamW(learning_rate(config, steps), weight_decay=config.weight_decay,
                                       use_ema=config.ema > 0, ema_momentum=config.ema or 0.99)
    # compile
    model.compile(optimizer=optimizer, loss=loss, metrics=[miou, *losses.term_metrics(loss)],
                  jit_compile=config.jit_compile)
    return model


def init_weights(model, source: str) -> None:
    """Copy every weight of the model at `source` (a .keras file or a run folder) into `model`."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file() or path.suffix != ".keras":
        raise UserError(f"--init-from {source!r}: no .keras model there (give a .keras file or a run folder)")
    try:
        src = keras.saving.load_model(path, compile=False)
    except Exception as e:  # a corrupt or foreign file
        raise UserError(f"--init-from {source!r}: cannot load it as a Keras model ({type(e).__name__})") from None
    theirs, ours = src.get_weights(), model.get_weights()
    if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in zip(theirs, ours)):
        out_src, out_ours = src.outputs[0].shape[-1], model.outputs[0].shape[-1]
        raise UserError(f"--init-from {source!r}: its weights do not fit {model.name} "
                        f"({len(theirs)} arrays, {out_src} classes; this model has {len(ours)} arrays, "
                        f"{out_ours} classes); use the same --model, options and dataset")
    model.set_weights(theirs)
    print(f"initialised {len(ours)} weight arrays from {path}")


def sample_batch(val_raw, count):
    """`count` validation examples spread evenly over the split, padded to a common multiple of 32
    (the same ones every epoch, so the pictures show progress)."""
    if count <= 0:
        return None, None
    total = int(val_raw.cardinality())
    wanted = evenly_spaced(total, count) if total > 0 else None
    examples = [e for k, e in enumerate(val_raw.take(total if total > 0 else count).map(pad_to_multiple)
                                        .as_numpy_iterator()) if wanted is None or k in wanted]
    h = max(e[0].shape[0] for e in examples)
    w = max(e[0].shape[1] for e in examples)
    images = np.stack([np.pad(i, ((0, h - i.shape[0]), (0, w - i.shape[1]), (0, 0))) for i, _ in examples])
    masks = np.stack([np.pad(m, ((0, h - m.shape[0]), (0, w - m.shape[1])), constant_values=255) for _, m in examples])
    return images, masks


class KerasRecorderCallback(keras.callbacks.Callback):
    """Feeds Keras' fit loop into a RunRecorder."""

    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder

    def on_epoch_begin(self, epoch, logs=None):
        self.recorder.epoch_begin()

    def on_train_batch_end(self, batch, logs=None):
        if not self.recorder.batch_end(batch, (logs or {}).get("loss")):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.recorder.epoch_end(epoch + 1, dict(logs or {}), current_lr(self.model.optimizer))
        if self.recorder.stop:
            self.model.stop_training = True


def weights_to_keep(model) -> list:
    """`model.get_weights()`, with the optimizer's moving averages in place of the trainable weights
    when it keeps them (`--ema`); BatchNorm statistics stay those of the current weights."""
    optimizer = getattr(model, "optimizer", None)
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_model_variables_moving_average", None):
        return model.get_weights()
    averages = {id(v): a for v, a in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)}
    return [np.asarray(averages.get(id(v), v)) for v in model.weights]


def save_keras_atomic(model, path: Path):
    """Save the model without optimizer state (a third of the size; Keras 3 always includes it
    for a compiled model), under a temporary name, then rename."""
    tmp = path.with_name(".tmp-" + path.name)
    clone = model.__class__.from_config(model.get_config())  # not clone_model: that compiles the copy
    clone.set_weights(weights_to_keep(model))
    clone.save(tmp)
    tmp.replace(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    config, run_dir, resume_epoch, checkpoint = setup_run(args)
    # First: MultiWorkerMirroredStrategy must be made before TensorFlow runs any op.
    strategy = runtime.make_strategy(config.strategy)
    policy = runtime.set_precision(config.precision, config.model)
    keras.utils.set_random_seed(config.seed)

    # dataset
    train_raw, info = data.load_dataset(config.dataset, config.data_dir, config.train_split)
    val_raw, val_info = data.load_dataset(config.dataset, config.data_dir, config.val_split)
    with data.data_errors_as_user_errors(info, val_info):
        return train(config, args, run_dir, resume_epoch, checkpoint, train_raw, val_raw, info, strategy, policy)


def train(config, args, run_dir, resume_epoch, checkpoint, train_raw, val_raw, info, strategy, policy) -> int:
    workers = runtime.worker_info()
    replicas = strategy.num_replicas_in_sync
    if config.model == "unet_tf" and config.init_from:
        raise UserError("--init-from works with the Keras models; unet_tf resumes from its own checkpoints")
    if config.model == "unet_tf" and (replicas > 1 or workers["num_workers"] > 1):
        raise UserError(f"unet_tf trains in its own loop without tf.distribute; use --strategy none "
                        f"(got {replicas} replicas on {workers['num_workers']} workers)")
    global_batch = config.batch_size * replicas
    num_train = int(train_raw.cardinality())
    if num_train < 0:
        num_train = sum(1 for _ in train_raw)
    steps = config.steps_per_epoch or max(1, num_train // global_batch)
    train_part, sharding = worker_share(config, workers, config.train_split, train_raw, min_examples=global_batch)
    val_part, val_sharding = worker_share(config, workers, config.val_split, val_raw)
    train_ds = prepare(train_part, training=True, batch_size=global_batch, image_size=config.image_size,
                       seed=config.seed, scale_range=(config.scale_min, config.scale_max)).repeat()
    val_ds = prepare(val_part, training=False, batch_size=global_batch, image_size=config.val_image_size)
    train_ds, val_ds = with_shard_policy(train_ds, sharding), with_shard_policy(val_ds, val_sharding)
    weights = class_weights(config, train_raw, info)  # from every file, so all workers use the same weights

    writer = workers["is_chief"]
    created = writer and not run_dir.exists()
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", {
            "config": config.to_json(), "dataset_info": info.to_dict(), "class_weights": weights,
            "precision_policy": policy, "replicas": replicas, "workers": workers["num_workers"],
            "data_sharding": sharding, "val_data_sharding": val_sharding,
            "num_train_images": num_train, "steps_per_epoch": steps, "versions": library_versions()})
    history = run_folder.trim_history(run_dir, resume_epoch, write=writer) if resume_epoch else []
    if resume_epoch >= config.epochs:
        print(f"{run_dir} already finished {resume_epoch} of {config.epochs} epochs; pass --epochs N to train longer")
        return 0
    if args.resume:
        print(f"resuming {run_dir} from epoch {resume_epoch}" + (f" ({checkpoint})" if checkpoint else ""))

    if config.model == "unet_tf":
        import train_unet_tf

        return train_unet_tf.fit(config, run_dir, info, train_ds, val_ds, val_raw, steps, weights, history,
                                 resume_epoch, checkpoint, writer)

    try:
        with strategy.scope():
            if checkpoint is not None:  # every worker loads it (the run folder must be shared between machines)
                model = keras.saving.load_model(checkpoint)  # weights, optimizer state, loss and metrics
            else:
                model = build_and_compile(config, info, steps, weights)
    except UserError:
        if created:  # a new run that could not start leaves no folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    print(f"{config.model}: {model.count_params():,} parameters; {num_train} training images, {steps} steps "
          f"of {global_batch} per epoch; precision {policy}; {replicas} replica(s) on {workers['num_workers']} worker(s)"
          + (f", data split by {sharding}" if sharding != "none" else ""))

    sample_images, sample_masks = sample_batch(val_raw, config.num_samples)
    recorder = run_folder.RunRecorder(
        run_dir, info=info, sample_images=sample_images, sample_masks=sample_masks,
        predict=lambda x: np.asarray(model(x, training=False), np.float32),
        save_checkpoint=lambda path: model.save(path),
        save_best=lambda folder: save_keras_atomic(model, folder / "model.keras"),
        checkpoint_suffix=".keras", steps_per_epoch=steps, global_batch=global_batch, patience=config.patience,
        history=history, writer=writer, keep=config.keep)
    # Validation (inside fit, before on_epoch_end) sees the averaged weights; training goes on with its own.
    callbacks = [keras.callbacks.SwapEMAWeights()] if config.ema else []
    callbacks.append(KerasRecorderCallback(recorder))
    if writer:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False))

    # fit
    model.fit(train_ds, epochs=config.epochs, initial_epoch=resume_epoch, steps_per_epoch=steps,
              validation_data=val_ds, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    runtime.wait_for_workers(strategy)

    # save
    if recorder.nonfinite:
        print(recorder.nonfinite_message(), file=sys.stderr)
        return 1
    print(f"best val mIoU {recorder.best:.4f} at epoch {recorder.best_epoch}; run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
