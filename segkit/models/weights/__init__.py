"""Encoder weights: random init, keras.applications' ImageNet weights, a local file, or a keras-hub preset.

`encoder_weights` (the `--encoder-weights` flag) is one of
    None / "none"   random initialisation;
    "imagenet"      keras.applications' weights, downloaded once into ~/.keras/models
                    (offline: copy the .h5 file there by hand, or pass it as a path);
                    for the keras-hub models, the keras-hub ImageNet preset of their encoder;
    a file path     build with random init, then copy weights into the ENCODER layers:
        .keras       any saved Keras model: matched by layer name;
        .h5/.hdf5    Keras 2 / keras.applications weight files: matched by layer name;
        .weights.h5  Keras 3 weight files store no layer names (Keras addresses layers by
                     class name and position, see keras/src/saving/saving_lib.py), so the
                     encoder is matched by that same path scheme: this works for files saved
                     from a model of this package or from a bare keras.applications encoder.
                     A layer is loaded only if its weight shapes match; the builder prints
                     "loaded weights for N of M encoder layers from PATH".
    a keras-hub preset (the models built on keras-hub only: deeplabv3plus, segformer)
                     a local preset folder, as `backbone.save_to_preset(folder)` writes it
                     (config.json + model.weights.h5), or a handle keras-hub downloads:
                     a built-in preset name ("mit_b0_ade20k_512", "resnet_18_imagenet"),
                     "kaggle://...", "hf://..." or "modelscope://...". The preset's backbone
                     is loaded with `keras_hub.models.Backbone.from_preset` and its weights
                     copied into the encoder; its architecture must be the model's variant.
"""

from segkit.models.weights.applications import keras_application, no_imagenet_message
from segkit.models.weights.choice import (PRESET_SCHEMES, WEIGHT_FILE_SUFFIXES, KerasHubPreset, as_keras_hub_preset,
                                          parse_encoder_weights)
from segkit.models.weights.files import load_encoder_weights
from segkit.models.weights.presets import (copy_weights_in_order, keras_hub_weights, load_preset_backbone,
                                           load_preset_weights, preset_rescaling)

__all__ = ["PRESET_SCHEMES", "WEIGHT_FILE_SUFFIXES", "KerasHubPreset", "as_keras_hub_preset", "copy_weights_in_order",
           "keras_application", "keras_hub_weights", "load_encoder_weights", "load_preset_backbone",
           "load_preset_weights", "no_imagenet_message", "parse_encoder_weights", "preset_rescaling"]
