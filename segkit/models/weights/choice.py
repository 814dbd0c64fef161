"""What --encoder-weights names: none, imagenet, a weights file or a keras-hub preset (parse_encoder_weights)."""

from __future__ import annotations



import dataclasses
import os


from segkit.errors import UserError

WEIGHT_FILE_SUFFIXES = (".keras", ".weights.h5", ".h5", ".hdf5")


PRESET_SCHEMES = ("kaggle", "hf", "modelscope", "gs")  # the handles keras-hub's from_preset downloads


@dataclasses.dataclass(frozen=True)
class KerasHubPreset:
    """A keras-hub preset: a local folder (`local`) or a handle keras-hub downloads."""

    handle: str
    local: bool


def parse_encoder_weights(encoder_weights, presets=False):
    """Return None, "imagenet", the path of an existing weights file or a `KerasHubPreset`.

    Args:
        encoder_weights: the value of `--encoder-weights` (see the module docstring).
        presets: whether the caller takes a keras-hub preset; if not, a preset is a UserError.

    Example:
        >>> parse_encoder_weights("none") is None
        True
        >>> parse_encoder_weights("mit_b0_ade20k_512", presets=True)
        KerasHubPreset(handle='mit_b0_ade20k_512', local=False)
    """
    if encoder_weights is None or encoder_weights in ("none", "None"):
        return None
    if encoder_weights == "imagenet":
        return "imagenet"
    if not isinstance(encoder_weights, (str, os.PathLike)):
        raise UserError(
            f"encoder_weights must be None, 'none', 'imagenet', a path to a weights file or a "
            f"keras-hub preset, got {encoder_weights!r}"
        )
    path = os.fspath(encoder_weights)
    preset = as_keras_hub_preset(path)
    if preset is not None:
        if not presets:
            raise UserError(
                f"encoder_weights: {path!r} is a keras-hub preset, which only the models built on "
                f"keras-hub take; this one takes 'none', 'imagenet' or a weights file"
            )
        return preset
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise UserError(
            f"encoder_weights: {path!r} is neither 'none', 'imagenet' nor a weights file "
            f"ending in {' / '.join(WEIGHT_FILE_SUFFIXES)}"
            + (" nor a keras-hub preset (a preset name, kaggle:// or hf:// handle, or preset folder)"
               if presets else "")
        )
    if not os.path.isfile(path):
        raise UserError(f"encoder_weights: file {path!r} does not exist")
    return path


def as_keras_hub_preset(value):
    """A `KerasHubPreset` if `value` names one (a folder, a kaggle:// / hf:// / ... handle or a
    keras-hub built-in preset name), else None.

    Example:
        >>> as_keras_hub_preset("resnet_18_imagenet")
        KerasHubPreset(handle='resnet_18_imagenet', local=False)
    """
    if not isinstance(value, (str, os.PathLike)):
        return None
    value = os.fspath(value)
    if os.path.isdir(value):
        return KerasHubPreset(value, local=True)
    if "://" in value and value.split("://", 1)[0].lower() in PRESET_SCHEMES:
        return KerasHubPreset(value, local=False)
    if os.path.exists(value) or value.endswith(WEIGHT_FILE_SUFFIXES):
        return None
    import keras_hub  # noqa: F401  (importing it registers the built-in presets)
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    return KerasHubPreset(value, local=False) if value in BUILTIN_PRESETS else None
