"""The training loop of the Keras models: `model.fit` with a callback that feeds the RunRecorder.

    model -> loss and metrics -> AdamW -> compile -> fit (validation every epoch) -> recorder

Checkpoints are whole `.keras` files (weights, optimizer state, loss and metrics), so a resumed run
continues exactly; the run's model (`model.keras`) is saved without optimizer state, with the weight
averages in place of the weights when `--ema` is on.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import keras
import numpy as np

from segkit import data
from segkit import losses
from segkit import metrics
from segkit import catalog
from segkit import models
from segkit.errors import UserError
from segkit import runtime
from segkit.training import batchnorm
from segkit.inference.loading import check_keras_file, load_model
from segkit.models.ensemble import ensemble_members
from segkit.training.auxiliary import AuxiliaryHead, with_auxiliary_outputs
from segkit.training.distill import Distiller, in_policy
from segkit.training.recorder import RunRecorder
from segkit.training.schedule import current_lr, learning_rate


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
    if config.aux_weight:
        network = with_auxiliary_outputs(model, catalog.model(config.model).aux_layer, info.num_classes)
        model = AuxiliaryHead(network, config.aux_weight)
    if config.distill_from:
        model = Distiller(model, load_teacher(config.distill_from, info.num_classes), config.distill_weight,
                          config.distill_temperature, ignore_index=data.IGNORE)
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


def keras_model_at(source: str, flag: str):
    """(path, keras.Model) of the .keras file `source` names, or of a run folder's model.keras."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file() or path.suffix != ".keras":
        raise UserError(f"{flag} {source!r}: no .keras model there (give a .keras file or a run folder)")
    return path, load_model(path, flag=flag).keras_model


def init_weights(model, source: str) -> None:
    """Copy every weight of the model at `source` (a .keras file or a run folder) into `model`."""
    path, src = keras_model_at(source, "--init-from")
    members = ensemble_members(src)
    if members:
        raise UserError(f"--init-from {source!r} is an ensemble of {len(members)} networks (the mean of their "
                        f"probabilities), not one network: start from one of the networks it was built from")
    theirs, ours = src.get_weights(), model.get_weights()
    if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in zip(theirs, ours)):
        out_src, out_ours = src.outputs[0].shape[-1], model.outputs[0].shape[-1]
        raise UserError(f"--init-from {source!r}: its weights do not fit {model.name} "
                        f"({len(theirs)} arrays, {out_src} classes; this model has {len(ours)} arrays, "
                        f"{out_ours} classes); use the same --model, options and dataset")
    model.set_weights(theirs)
    print(f"initialised {len(ours)} weight arrays from {path}")


def load_teacher(source: str, num_classes: int):
    """The Keras model at `source` (a .keras file or a run folder), as a teacher for `num_classes` classes."""
    path, teacher = keras_model_at(source, "--distill-from")
    outputs = teacher.outputs[0].shape[-1]
    if outputs != num_classes:
        raise UserError(f"--distill-from {source!r} predicts {outputs} classes; this run's data has {num_classes}")
    policy = keras.mixed_precision.global_policy().name  # the run's: a float32 teacher runs in it too
    teacher = in_policy(teacher, policy) if policy.startswith("mixed_") else teacher
    print(f"distilling from {path} ({teacher.count_params():,} parameters, computing in {policy})")
    return teacher


def load_checkpoint(path: Path):
    """The compiled model of a `.keras` checkpoint (weights, optimizer state, loss and metrics)."""
    check_keras_file(path, "checkpoint")
    try:
        return keras.saving.load_model(path)
    except Exception as exc:  # an intact archive that is not a checkpoint of ours
        raise UserError(f"cannot resume from checkpoint {path}: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None


def weights_to_keep(model, optimizer=None) -> list:
    """`model.get_weights()`, with the optimizer's moving averages in place of the trainable weights
    when it keeps them (`--ema`); BatchNorm statistics stay those of the current weights."""
    optimizer = optimizer or getattr(model, "optimizer", None)
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_model_variables_moving_average", None):
        return model.get_weights()
    averages = {id(v): a for v, a in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)}
    return [np.asarray(averages.get(id(v), v)) for v in model.weights]


def save_model(model, path: Path) -> None:
    """Save the model without optimizer state (a third of the size; Keras 3 always includes it
    for a compiled model); of a Distiller, the student alone; of an AuxiliaryHead, the network without it."""
    optimizer = getattr(model, "optimizer", None)
    if isinstance(model, Distiller):
        model = model.student
    if isinstance(model, AuxiliaryHead):
        model = model.main_model()
    clone = model.__class__.from_config(model.get_config())  # not clone_model: that compiles the copy
    clone.set_weights(weights_to_keep(model, optimizer))
    clone.save(path)


class KerasSaver:
    """What the RunRecorder saves for a Keras model (see RunRecorder)."""

    suffix = ".keras"

    def __init__(self, model):
        self.model = model

    def save_checkpoint(self, path: Path) -> None:
        self.model.save(path)

    def save_model(self, path: Path) -> None:
        save_model(self.model, path)

    @staticmethod
    def model_path(run_dir: Path) -> Path:
        return Path(run_dir) / "model.keras"

    def predict(self, images) -> np.ndarray:
        return np.asarray(self.model(images, training=False), np.float32)


class DeferredInterrupt:
    """Ctrl-C (SIGINT) while `fit` runs, raised as KeyboardInterrupt where the loop is between steps.

    Python raises KeyboardInterrupt wherever the main thread happens to be; while the model is built and fit runs
    that can be the middle of a TensorFlow call (the data iterator's, a trace), and a test run in CI then did
    not end within 120 s of the signal (no "interrupted" line). Under `active()` the first SIGINT is only
    noted; the RecorderCallback raises it at the next batch's end (training or validation), so the run stops
    there: exit status 130, the last checkpoint intact. A second SIGINT interrupts at once. Outside the main
    thread (signals cannot be handled there) nothing changes."""

    def __init__(self):
        self.pending = False

    def _handle(self, signum, frame):
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    @contextlib.contextmanager
    def active(self):
        # Not outside the main thread, nor where SIGINT is ignored (a job started with `&` by a script).
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.pending:  # noted after the last batch's check (fit was ending): still an interrupt
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.pending:
            raise KeyboardInterrupt


class RecorderCallback(keras.callbacks.Callback):
    """Feeds Keras' fit loop into a RunRecorder; raises a deferred Ctrl-C between steps (DeferredInterrupt)."""

    def __init__(self, recorder, interrupt: DeferredInterrupt | None = None):
        super().__init__()
        self.recorder = recorder
        self.interrupt = interrupt or DeferredInterrupt()

    def on_epoch_begin(self, epoch, logs=None):
        self.recorder.epoch_begin()

    def on_train_batch_end(self, batch, logs=None):
        if not self.recorder.batch_end(batch, (logs or {}).get("loss")):
            self.model.stop_training = True
        self.interrupt.check()

    def on_test_batch_end(self, batch, logs=None):
        self.interrupt.check()

    def on_epoch_end(self, epoch, logs=None):
        self.recorder.epoch_end(epoch + 1, dict(logs or {}), current_lr(self.model.optimizer))
        if self.recorder.stop:
            self.model.stop_training = True
        self.interrupt.check()


def fit(config, run, splits) -> RunRecorder:
    """Train `config`'s Keras model on `splits` into `run`; returns the recorder (best epoch, stop reason)."""
    interrupt = DeferredInterrupt()
    with interrupt.active():
        return _fit(config, run, splits, interrupt)


def _fit(config, run, splits, interrupt) -> RunRecorder:
    with run.strategy.scope():
        if run.checkpoint is not None:  # every worker loads it (the run folder must be shared between machines)
            model = load_checkpoint(run.checkpoint)
            # The schedule of config.epochs: the same as stored unless --epochs changed (see segkit.training.schedule).
            model.optimizer.learning_rate = learning_rate(config, splits.steps)
        else:
            model = build_and_compile(config, splits.info, splits.steps, splits.class_weights)
    print(f"{config.model}: {model.count_params():,} parameters; {splits.num_train} training images, {splits.steps} "
          f"steps of {splits.global_batch} per epoch; precision {keras.mixed_precision.global_policy().name}; "
          f"{run.strategy.num_replicas_in_sync} replica(s) on {runtime.worker_info()['num_workers']} worker(s)"
          + (f", data split by {splits.sharding}" if splits.sharding != "none" else ""))

    recorder = RunRecorder(run, config, splits, KerasSaver(model))
    # Validation (inside fit, before on_epoch_end) sees the averaged weights; training goes on with its own.
    callbacks = [keras.callbacks.SwapEMAWeights()] if config.ema else []
    callbacks.append(RecorderCallback(recorder, interrupt))
    if run.writer:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.dir / "logs"), write_graph=False))
    # BatchNormalization runs TensorFlow's fused kernel (training steps, validation, a teacher's forward pass),
    # in a new run and a resumed one alike.
    with batchnorm.fused():
        model.fit(splits.train, epochs=config.epochs, initial_epoch=run.resume_epoch,
                  steps_per_epoch=splits.steps, validation_data=splits.val, callbacks=callbacks,
                  verbose=1 if sys.stdout.isatty() else 2)
    return recorder
