"""The training loop of `unet_tf`, the U-Net in raw TensorFlow ops (models/unet_tf.py).

It takes the same inputs as the Keras loop (segkit.training.loop_keras.fit: config, Run, Splits) and the
run folder is the same (recorder.RunRecorder does the bookkeeping). What differs:

- one `tf.function` step with `tf.GradientTape` and a raw-TF Adam (`AdamTF`);
- checkpoints are `tf.train.Checkpoint(model, optimizer)` folders, `checkpoints/epoch_NNN/`;
- the best model is exported as a SavedModel, `saved_model/`, with a `serving_default`
  signature (images -> {"logits"}), which evaluate.py, predict.py and export.py load.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from segkit import losses
from segkit import metrics
from segkit import models
from segkit.models.unet_tf import AdamTF, export_savedmodel, make_train_step
from segkit.training.recorder import RunRecorder
from segkit.training.schedule import learning_rate, rate_at


class TFSaver:
    """What the RunRecorder saves for unet_tf: tf.train.Checkpoint folders and a SavedModel."""

    suffix = ""

    def __init__(self, model, state, forward):
        self.model, self.state, self.forward = model, state, forward

    def save_checkpoint(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.state.write(str(path / "ckpt"))

    def save_model(self, path: Path) -> None:
        export_savedmodel(self.model, path)

    @staticmethod
    def model_path(run_dir: Path) -> Path:
        return Path(run_dir) / "saved_model"

    def predict(self, images) -> np.ndarray:
        return self.forward(tf.constant(images)).numpy()


def fit(config, run, splits) -> RunRecorder:
    """Train unet_tf on `splits` into `run`; returns the recorder (best epoch, stop reason)."""
    info, steps = splits.info, splits.steps
    model = models.build_model("unet_tf", info.num_classes, encoder_weights=None, **config.model_options())
    loss_fn = losses.get_loss(config.loss, info.num_classes, ignore_index=info.ignore_index,
                              class_weights=splits.class_weights,
                              **config.loss_params())
    optimizer = AdamTF(model.trainable_variables)
    state = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if run.checkpoint is not None:
        state.read(str(run.checkpoint / "ckpt")).assert_consumed()
    schedule = learning_rate(config, steps)
    terms = losses.term_metrics(loss_fn)  # each term of a composite loss, logged like Keras' fit does
    step = make_train_step(model, loss_fn, optimizer, return_logits=bool(terms))
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"unet_tf: {count:,} parameters; {steps} steps of {config.batch_size} per epoch; raw TF loop")

    recorder = RunRecorder(run, config, splits, TFSaver(model, state, forward))
    batches = iter(splits.train)
    board = tf.summary.create_file_writer(str(run.dir / "logs")) if run.writer else tf.summary.create_noop_writer()
    for epoch in range(run.resume_epoch, config.epochs):
        print(f"Epoch {epoch + 1}/{config.epochs}")
        progress = keras.utils.Progbar(steps, verbose=1 if sys.stdout.isatty() else 2)
        recorder.epoch_begin()
        total = 0.0
        for term in terms:
            term.reset_state()
        lr = rate_at(schedule, optimizer.iterations)
        for batch in range(steps):
            images, masks = next(batches)
            lr = rate_at(schedule, optimizer.iterations)
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
        for images, masks in splits.val:
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
    return recorder
