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

from segkit import catalog
from segkit.errors import UserError
from segkit.models.blocks import SKIPS
from segkit.models.ensemble import build_ensemble  # noqa: F401  (registers MeanProbability with Keras)
from segkit.models.weights import as_keras_hub_preset



def _builder(spec: catalog.ModelSpec):
    """The builder of `spec`; for a keras-hub model without keras-hub installed, one that says how to install it."""
    try:
        return spec.build_fn()
    except ModuleNotFoundError as exc:
        if not (spec.keras_hub and (exc.name or "").split(".")[0] == "keras_hub"):
            raise

        def needs_keras_hub(num_classes, input_shape=(None, None, 3), encoder_weights=None):
            raise UserError(f"{spec.name} is built on keras-hub, which is not installed here: "
                            f"pip install --no-deps keras-hub==0.32.0 (its own dependencies: requirements.txt)")

        return needs_keras_hub


# name -> builder, for every model of segkit.catalog (where each model's facts are kept). Importing this
# package imports every builder's module, which registers their layers with Keras.
MODELS = {name: _builder(spec) for name, spec in catalog.MODELS.items()}
DEFAULT_MODEL = catalog.DEFAULT_MODEL
PRESET_MODELS = tuple(name for name, spec in catalog.MODELS.items() if spec.keras_hub)
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
            preset (see segkit/models/weights/).
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
    catalog.model(name)  # an unknown name: one line with the choices
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
