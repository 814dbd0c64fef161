"""The training loop for `unet_tf`, the U-Net in raw TensorFlow ops (models/unet_tf.py).

train.py hands over here after building the datasets; the run folder is the same as for
the Keras models (run_folder.RunRecorder does the bookkeeping). What differs:

- one `tf.function` step with `tf.GradientTape` and a raw-TF Adam (`AdamTF`);
- checkpoints are `tf.train.Checkpoint(model, optimizer)` folders, `checkpoints/epoch_NNN/`;
- the best model is exported as a SavedModel, `saved_model/`, with a `serving_default`
  signature (images -> {"logits"}), which evaluate.py, predict.py and export.py load.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import losses
import metrics
import models
import run_folder
from models.unet_tf import AdamTF, export_savedmodel, make_train_step


def export_best(model, run_dir: Path) -> None:
    """saved_model/ replaced atomically: written beside it, then renamed into place."""
    tmp, final, old = run_dir / ".tmp-saved_model", run_dir / "saved_model", run_dir / ".old-saved_model"
    shutil.rmtree(tmp, ignore_errors=True)
    export_savedmodel(model, tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def fit(config, run_dir, info, train_ds, val_ds, val_raw, steps, weights, history, resume_epoch, checkpoint, writer):
    from train import learning_rate, sample_batch

    model = models.build_model("unet_tf", info.num_classes, encoder_weights=None, **config.model_options())
    loss_fn = losses.get_loss(config.loss, info.num_classes, ignore_index=info.ignore_index, class_weights=weights,
                              **config.loss_params())
    optimizer = AdamTF(model.trainable_variables)
    state = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if checkpoint is not None:
        state.read(str(checkpoint / "ckpt")).assert_consumed()
    schedule = learning_rate(config, steps)
    terms = losses.term_metrics(loss_fn)  # each term of a composite loss, logged like Keras' fit does
    step = make_train_step(model, loss_fn, optimizer, return_logits=bool(terms))
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"unet_tf: {count:,} parameters; {steps} steps of {config.batch_size} per epoch; raw TF loop")

    def save_checkpoint(path: Path):
        path.mkdir(parents=True, exist_ok=True)
        state.write(str(path / "ckpt"))

    sample_images, sample_masks = sample_batch(val_raw, config.num_samples)
    recorder = run_folder.RunRecorder(
        run_dir, info=info, sample_images=sample_images, sample_masks=sample_masks,
        predict=lambda x: forward(tf.constant(x)).numpy(), save_checkpoint=save_checkpoint,
        save_best=lambda folder: export_best(model, folder) if folder else None, checkpoint_suffix="",
        steps_per_epoch=steps, global_batch=config.batch_size, patience=config.patience, history=history,
        writer=writer)
    batches = iter(train_ds)
    board = tf.summary.create_file_writer(str(run_dir / "logs")) if writer else tf.summary.create_noop_writer()
    for epoch in range(resume_epoch, config.epochs):
        print(f"Epoch {epoch + 1}/{config.epochs}")
        progress = keras.utils.Progbar(steps, verbose=1 if sys.stdout.isatty() else 2)
        recorder.epoch_begin()
        total = 0.0
        for term in terms:
            term.reset_state()
        lr = float(schedule(optimizer.iterations) if callable(schedule) else schedule)
        for batch in range(steps):
            images, masks = next(batches)
            lr = float(schedule(optimizer.iterations) if callable(schedule) else schedule)
            value = step(images, masks, tf.constant(lr, tf.float32))
            if terms:
                value, logits = value
                for term in terms:
                    term.update_state(masks, logits)
            value = float(value)
            if not recorder.batch_end(batch, value):
                break
            total += value
            progress.update(batch + 1, [("loss", value)])
        if recorder.stop:
            recorder.epoch_end(epoch + 1, {"loss": float("nan")}, lr)
            break
        logs = {"loss": total / steps, **{term.name: float(term.result()) for term in terms}}
        miou = metrics.ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index, name="miou")
        for term in terms:
            term.reset_state()
        val_losses = []
        for images, masks in val_ds:
            logits = forward(images)
            miou.update_state(masks, logits)
            val_losses.append(float(loss_fn(masks, logits)))
            for term in terms:
                term.update_state(masks, logits)
        logs.update({"val_loss": float(np.mean(val_losses)), "val_miou": float(miou.result()),
                     **{f"val_{term.name}": float(term.result()) for term in terms}})
        print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        recorder.epoch_end(epoch + 1, logs, lr)
        with board.as_default(step=epoch + 1):
            for key, value in {**logs, "learning_rate": lr}.items():
                tf.summary.scalar(key, value)
        if recorder.stop:
            break
    if recorder.nonfinite:
        print(recorder.nonfinite_message(), file=sys.stderr)
        return 1
    print(f"best val mIoU {recorder.best:.4f} at epoch {recorder.best_epoch}; run folder: {run_dir}")
    return 0
