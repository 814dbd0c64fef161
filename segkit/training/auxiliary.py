"""An auxiliary segmentation head for training (DDRNet's "deep supervision", Hong et al. 2021): a second small
head on intermediate features, trained on the same labels, that sends gradient straight into the middle of the
network. It exists only while training; the run's model.keras is the network without it.

    segkit train --model ddrnet --aux-weight 0.4

The loss is the run's loss on the main logits plus `weight` times the same loss on the auxiliary logits
(resized to the input like the main ones). The head sits on the layer the model's record names
(segkit.catalog: `aux_layer`; DDRNet: the high-resolution branch after its first bilateral fusion, where the
paper puts it) and is BN-ReLU-3x3 conv-BN-ReLU-1x1 conv, as wide as those features. `AuxiliaryHead` is what the
training loop compiles and checkpoints (network and head together, so a run resumes exactly); validation
scores the main logits alone.
"""

from __future__ import annotations

import keras

from segkit.errors import UserError
from segkit.models.blocks import ResizeLike
from segkit.models.ddrnet import seg_head


def with_auxiliary_outputs(network: keras.Model, layer_name: str, num_classes: int) -> keras.Model:
    """A functional model sharing `network`'s layers, with outputs [its logits, auxiliary logits]: the head on
    the output of its layer `layer_name`, resized to the input."""
    try:
        features = network.get_layer(layer_name).output
    except ValueError:
        raise UserError(f"{network.name} has no layer {layer_name!r} for an auxiliary head") from None
    x = seg_head(features, features.shape[-1], num_classes, name="aux")  # DDRNet's own head, as wide as its input
    aux = ResizeLike(dtype="float32", name="aux_logits")([x, network.inputs[0]])
    return keras.Model(network.inputs[0], [network.outputs[0], aux], name=network.name)


@keras.saving.register_keras_serializable(package="segkit")
class AuxiliaryHead(keras.Model):
    """The network with its auxiliary head: calling it returns the main logits, or in training (main,
    auxiliary); its loss adds `weight` times the compiled loss of the auxiliary logits (logged as `aux`), and
    its metrics see the main logits alone."""

    def __init__(self, network, weight=0.4, **kwargs):
        super().__init__(name=kwargs.pop("name", "auxiliary_head"), **kwargs)
        self.network = network  # outputs [logits, auxiliary logits] (with_auxiliary_outputs)
        self.weight = float(weight)
        self.aux_tracker = keras.metrics.Mean(name="aux")
        # The network without the head, for validation, prediction and model.keras (none needs the auxiliary
        # logits). Set past Keras' attribute tracking: its layers are `network`'s, tracked (and checkpointed) there.
        main = keras.Model(network.inputs[0], network.outputs[0], name=network.name)
        object.__setattr__(self, "_main", main)
        self.built = network.built

    def call(self, inputs, training=None):
        if not training:
            return self._main(inputs, training=training)
        logits, aux = self.network(inputs, training=training)
        return logits, aux  # both go on to compute_loss (through Keras' train_step, per replica)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y_pred, aux = y_pred if isinstance(y_pred, (tuple, list)) else (y_pred, None)
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if aux is None:  # validation scores the main logits alone
            return loss
        term = self._compile_loss(y, aux, sample_weight)
        self.aux_tracker.update_state(term)
        return loss + self.weight * term

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y_pred = y_pred[0] if isinstance(y_pred, (tuple, list)) else y_pred
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def main_model(self) -> keras.Model:
        """The network without the head (its layers and weights are the same objects), built once."""
        return self._main

    @property
    def metrics(self):
        return [*super().metrics, self.aux_tracker]

    def get_config(self):
        return {"network": keras.saving.serialize_keras_object(self.network), "weight": self.weight,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        return cls(network, **config)
