"""An ensemble of trained segmentation models as one Keras model: the mean of their per-pixel class
probabilities, given out as log-probabilities (logits whose softmax is that mean), so it is used, evaluated
and exported like any single model.

    segkit export --model runs/a runs/b --format keras --out ensemble.keras

Models trained alike from different seeds or with different augmentation err on different pixels; averaging
their probabilities removes part of that error (docs/camvid.md measures it on sequence-held-out folds). The
members keep their own weights and run one after another: the ensemble costs the sum of their time.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="segkit")
class MeanProbability(layers.Layer):
    """[logits (N, H, W, C), ...] -> log(mean_i softmax(logits_i)), float32, computed stably as
    logsumexp_i(log_softmax(logits_i)) - log(n), and raised to at least log(FLOOR).

    The floor: a class the ensemble gives less than 1e-4 changes neither the mask nor anyone's reading of the
    probabilities, and a bounded output range (about -9.2 to 0 rather than -30 to 0) is what lets an int8
    TFLite file represent the likely classes finely."""

    FLOOR = 1e-4

    def call(self, inputs):
        stacked = ops.stack([ops.log_softmax(ops.cast(x, "float32"), axis=-1) for x in inputs], axis=0)
        return ops.maximum(ops.logsumexp(stacked, axis=0) - math.log(len(inputs)), math.log(self.FLOOR))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _renamed(model: keras.Model, name: str) -> keras.Model:
    """A copy of `model` under another name (the ensemble's members need distinct names), same weights."""
    config = keras.saving.serialize_keras_object(model)
    config["config"] = {**config["config"], "name": name}
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def build_ensemble(members, name: str = "ensemble") -> keras.Model:
    """One model from `members` (two or more keras.Models mapping the same images to logits over the same
    classes): images in, log of the mean class probability out. Each member is copied under the name
    member_<i>_<its name>."""
    from segkit.errors import UserError

    members = list(members)
    if len(members) < 2:
        raise UserError(f"an ensemble needs at least two models, got {len(members)}")
    classes = {m.outputs[0].shape[-1] for m in members}
    if len(classes) != 1:
        raise UserError(f"the ensemble's models predict different numbers of classes: {sorted(classes)}")
    inputs = keras.Input((None, None, 3), name="image")
    logits = [_renamed(m, f"member_{i}_{m.name}")(inputs) for i, m in enumerate(members)]
    return keras.Model(inputs, MeanProbability(dtype="float32", name="mean_probability")(logits), name=name)


def ensemble_members(model: keras.Model) -> list:
    """The member networks of a model built by build_ensemble (reloaded or not); [] for any other model."""
    if not any(isinstance(layer, MeanProbability) for layer in model.layers):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]
