"""Knowledge distillation: a student trained on the labels and on a trained teacher's per-pixel class
distribution (Hinton et al. 2015), for a small real-time model that learns from an accurate one.

    segkit train --model ddrnet --variant tiny --distill-from runs/accurate/model.keras --distill-weight 0.5

The loss is the run's loss plus `weight` * T^2 * KL(softmax(teacher / T) || softmax(student / T)), the mean over
the labelled pixels of the crop (void and padding, label 255, are left out), T = `temperature`. The teacher runs
in inference mode (its BatchNorm statistics fixed) and is not trained. `Distiller` is what the training loop
compiles and checkpoints (student and teacher together, so a run resumes exactly); the run's model.keras is the
student alone.
"""

from __future__ import annotations

import keras
from keras import ops

from segkit.runtime import with_policies


def distillation_term(student_logits, teacher_logits, labels, temperature: float, ignore_index: int = 255):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the pixels whose label is not
    `ignore_index` (0 when there are none). Logits (N, H, W, C), labels (N, H, W)."""
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    p_teacher = ops.softmax(t, axis=-1)
    kl = ops.sum(p_teacher * (ops.log_softmax(t, axis=-1) - ops.log_softmax(s, axis=-1)), axis=-1)
    labels = ops.reshape(ops.cast(labels, "int32"), ops.shape(kl))
    valid = ops.cast(ops.not_equal(labels, ignore_index), "float32")
    return temperature ** 2 * ops.sum(kl * valid) / ops.maximum(ops.sum(valid), 1.0)


def in_policy(model, policy: str):
    """A copy of `model` (same weights) whose layers compute in dtype policy `policy`, its output layers
    excepted: a float32 teacher (every exported or shipped file is float32) runs in the run's mixed precision,
    about twice as fast on a bfloat16 CPU, and its logits stay float32. `model` itself when it has nothing to
    change."""
    entries = model.get_config().get("output_layers", [])
    entries = [entries] if entries and isinstance(entries[0], str) else entries  # one output: [name, node, index]
    outputs = {entry[0] for entry in entries}
    return with_policies(model, lambda name, layer: name if layer in outputs else policy)[0]


@keras.saving.register_keras_serializable(package="segkit")
class Distiller(keras.Model):
    """The student, trained with the teacher's help: calling it calls the student; its loss adds the
    distillation term (logged as `distill`)."""

    def __init__(self, student, teacher, weight=0.5, temperature=1.0, ignore_index=255, **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.weight, self.temperature, self.ignore_index = float(weight), float(temperature), int(ignore_index)
        self.distill_tracker = keras.metrics.Mean(name="distill")
        self.built = student.built and teacher.built  # both come built: nothing to create here

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not training:  # validation scores the student alone, as a run without a teacher would
            return loss
        teacher = ops.stop_gradient(self.teacher(x, training=False))
        term = distillation_term(y_pred, teacher, y, self.temperature, self.ignore_index)
        self.distill_tracker.update_state(term)
        return loss + self.weight * term

    @property
    def metrics(self):
        return [*super().metrics, self.distill_tracker]

    def get_config(self):
        return {"student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "weight": self.weight, "temperature": self.temperature, "ignore_index": self.ignore_index,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
        return cls(student, teacher, **config)
