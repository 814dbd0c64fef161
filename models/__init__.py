"""Segmentation models: `build_model(name, num_classes, ...)` and the `MODELS` registry.

Every model maps float32 images in [0, 1], (N, H, W, 3), H and W divisible by 32, to float32
logits (N, H, W, num_classes) with no final activation. Each model does its encoder's input
preprocessing itself. The Keras models save with `model.save("x.keras")` and reload with
`keras.saving.load_model` alone; `unet_tf` is a raw-TensorFlow `tf.Module` (checkpoint it
with `tf.train.Checkpoint`, export it with `models.unet_tf.export_savedmodel`).

`deeplabv3plus` and `segformer` are built on keras-hub (imported here, which adds about a second to
`import models` on top of TensorFlow's import): their `encoder_weights` may be a keras-hub preset. Their
.keras files name only Keras' layers and ours (registered as "segkit>...", some subclasses of keras-hub's),
so like every model here they reload with `import models` then `keras.saving.load_model(path)`.
"""

import inspect

import keras

from errors import UserError
from models.blocks import SKIPS
from models.ddrnet import build_ddrnet
from models.deeplabv3plus import build_deeplabv3plus
from models.mobilenetv2_pix2pix import build_mobilenetv2_pix2pix
from models.mobilenetv3_lraspp import build_mobilenetv3_lraspp
from models.resnet34_unet import build_resnet34_unet
from models.segformer import build_segformer
from models.unet_tf import build_unet_tf
from models.vgg16_unet import build_vgg16_unet
from models.weights import as_keras_hub_preset

MODELS = {
    "ddrnet": build_ddrnet,
    "deeplabv3plus": build_deeplabv3plus,
    "mobilenetv2_pix2pix": build_mobilenetv2_pix2pix,
    "mobilenetv3_lraspp": build_mobilenetv3_lraspp,
    "resnet34_unet": build_resnet34_unet,
    "segformer": build_segformer,
    "vgg16_unet": build_vgg16_unet,
    "unet_tf": build_unet_tf,
}
DEFAULT_MODEL = "mobilenetv2_pix2pix"
PRESET_MODELS = ("deeplabv3plus", "segformer")  # built on keras-hub: encoder_weights may be a keras-hub preset
_COMMON_ARGS = ("num_classes", "input_shape", "encoder_weights")
# keras.applications builds MobileNets with BatchNorm momentum 0.999, made for ImageNet-length
# schedules. Trained from scratch, activation scales drift quickly and such moving statistics lag
# far behind the weights: validation (inference mode) collapsed to one class on CamVid while
# training-mode predictions were fine, and re-estimating the statistics restored it (val mIoU 0.03 ->
# 0.24). 0.99 still lagged over a 300-step run; 0.9 (PyTorch's default, momentum=0.1 there) tracks.
BN_MOMENTUM = 0.9


def model_options(name):
    """The model-specific keyword options of `MODELS[name]` and their defaults.

    Example:
        >>> model_options("mobilenetv2_pix2pix")
        {'alpha': 1.0, 'encoder_trainable': True, 'dropout': False}
    """
    parameters = inspect.signature(MODELS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _COMMON_ARGS}


def build_model(name, num_classes, input_shape=(None, None, 3), encoder_weights=None, **options):
    """Build the model registered as `name`.

    Args:
        name: a key of MODELS.
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3); None sizes take any H, W divisible by 32.
        encoder_weights: None / "none", "imagenet", a weights file or, for PRESET_MODELS, a keras-hub
            preset (see models/weights.py).
        **options: the model's own options (`model_options(name)`), e.g. alpha=0.35.

    Returns:
        A keras.Model named `name` (a `UNetTF` tf.Module for "unet_tf").

    Raises:
        UserError: unknown name, unknown option, invalid value, or a keras-hub preset for a model
            not in PRESET_MODELS.

    Example:
        >>> model = build_model("mobilenetv2_pix2pix", 12, alpha=0.5)
        >>> model(np.zeros((1, 64, 64, 3), "float32")).shape
        TensorShape([1, 64, 64, 12])
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    accepted = model_options(name)
    # Checked here rather than by catching TypeError, which could come from deeper down.
    for option in options:
        if option not in accepted:
            raise UserError(
                f"unknown option {option!r} for model {name!r}; accepted options: {sorted(accepted)}"
            )
    if name not in PRESET_MODELS and as_keras_hub_preset(encoder_weights) is not None:
        raise UserError(
            f"encoder_weights: model {name!r} takes no keras-hub preset (got {encoder_weights!r}), only "
            f"{' and '.join(PRESET_MODELS)} do; {name} takes 'none', 'imagenet' or a weights file"
        )
    model = MODELS[name](num_classes, input_shape=input_shape, encoder_weights=encoder_weights, **options)
    if isinstance(model, keras.Model):
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = BN_MOMENTUM
    return model


__all__ = ["DEFAULT_MODEL", "MODELS", "PRESET_MODELS", "SKIPS", "build_model", "model_options"]
