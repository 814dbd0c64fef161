"""keras-hub presets: a local preset folder or a handle keras-hub downloads, its backbone's weights copied
into the encoder of deeplabv3plus or segformer."""

from __future__ import annotations

import os

from segkit.errors import UserError
from segkit.models.weights.choice import KerasHubPreset, parse_encoder_weights
from segkit.models.weights.files import shapes_match


def no_preset_message(handle):
    return (
        f"encoder_weights: the keras-hub preset {handle!r} needs a network download, which failed "
        f"(no network?); pass a local preset folder (as backbone.save_to_preset(folder) writes) "
        f"or --encoder-weights none"
    )


def _is_fetch_failure(error):
    # Offline, kagglehub raises requests' ConnectionError (an OSError); huggingface_hub retries, then
    # keras-hub reports its missing config.json as a ValueError "Preset ... has no config.json".
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) or "has no config.json" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def load_preset_backbone(preset, backbone_class, model):
    """The keras-hub backbone of `preset`, an instance of `backbone_class`, with its weights.

    A preset of a whole segmentation backbone (a SegFormerBackbone or DeepLabV3Backbone, e.g.
    "segformer_b0_ade20k_512") gives its `image_encoder`.

    Raises:
        UserError: a handle that could not be downloaded, a folder without config.json, or a
            preset holding another kind of backbone.

    Example:
        >>> load_preset_backbone(KerasHubPreset("mit_b0_ade20k_512", False), MiTBackbone, "x")  # doctest: +SKIP
        <MiTBackbone name=mit_backbone, built=True>
    """
    import keras_hub

    if preset.local and not os.path.isfile(os.path.join(preset.handle, "config.json")):
        raise UserError(
            f"encoder_weights: folder {preset.handle!r} holds no keras-hub preset (no config.json; "
            f"backbone.save_to_preset(folder) writes one)"
        )
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset.handle)
    except Exception as error:
        if not preset.local and _is_fetch_failure(error):
            raise UserError(no_preset_message(preset.handle)) from error
        raise
    if not isinstance(backbone, backbone_class) and isinstance(
        getattr(backbone, "image_encoder", None), backbone_class
    ):
        backbone = backbone.image_encoder
    if not isinstance(backbone, backbone_class):
        raise UserError(
            f"encoder_weights: preset {preset.handle!r} holds a {type(backbone).__name__}; "
            f"{model} needs a {backbone_class.__name__} preset"
        )
    return backbone


def preset_rescaling(preset):
    """(scale, offset) mapping images in [0, 1] to the preset's encoder input, or None.

    keras-hub's ImageConverter of a preset (image_converter.json) takes images in [0, 255] and
    computes `x * scale + offset`; for images in [0, 1] that is `x * (255 * scale) + offset`.
    None when the preset has no image converter (`backbone.save_to_preset` writes none).

    Example:
        >>> keras_hub.layers.ImageConverter(scale=1 / 255).save_to_preset("folder")  # doctest: +SKIP
        >>> preset_rescaling(KerasHubPreset("folder", local=True))  # doctest: +SKIP
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    import keras_hub
    from keras_hub.src.utils.preset_utils import IMAGE_CONVERTER_CONFIG_FILE, check_file_exists

    if not check_file_exists(preset.handle, IMAGE_CONVERTER_CONFIG_FILE):
        return None
    converter = keras_hub.layers.ImageConverter.from_preset(preset.handle)
    scale = [255.0 * s for s in _per_channel(converter.scale, 1.0)]
    return scale, _per_channel(converter.offset, 0.0)


def _per_channel(value, default):
    """An ImageConverter's scale or offset (None, a number or one per channel) as 3 floats."""
    if value is None:
        return [default] * 3
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)] * 3


def copy_weights_in_order(source, target):
    """Set the weights of `target`'s layers from `source`'s, pairing the layers that hold weights in
    order; both are built from the same architecture (e.g. a keras-hub backbone and our encoder that
    uses the same layers). Returns the number of layers set.

    Example:
        >>> copy_weights_in_order(preset_backbone, model.get_layer("encoder"))  # doctest: +SKIP
        67
    """
    sources = [layer for layer in source.layers if layer.weights]
    targets = [layer for layer in target.layers if layer.weights]
    assert len(sources) == len(targets), (len(sources), len(targets))
    for src, dst in zip(sources, targets):
        arrays = src.get_weights()
        assert shapes_match(dst, arrays), (src.name, dst.name)
        dst.set_weights(arrays)
    return len(targets)


def keras_hub_weights(encoder_weights, backbone_class, architectures, variant, imagenet_presets, model):
    """Resolve `encoder_weights` for a model built on a keras-hub backbone class.

    Args:
        encoder_weights: the `--encoder-weights` value.
        backbone_class: the keras-hub class the encoder is, e.g. keras_hub.models.MiTBackbone.
        architectures: {variant: the backbone's architecture arguments}.
        variant: the model's variant (a key of `architectures`).
        imagenet_presets: {variant: keras-hub's ImageNet preset of that encoder, or None}.
        model: the model's name, for messages.

    Returns:
        (weights, backbone, rescaling): `weights` is None, a weights file path or a KerasHubPreset
        ("imagenet" becomes the variant's ImageNet preset); `backbone` the preset's loaded keras-hub
        backbone (else None), whose architecture is checked to be the variant's; `rescaling` the
        (scale, offset) that maps images in [0, 1] to the encoder's input: the preset's image
        converter if it has one, else ImageNet's mean and std.

    Raises:
        UserError: no ImageNet preset for the variant, a preset that cannot be had (see
            `load_preset_backbone`), or a preset of another architecture than the variant's.

    Example:
        >>> keras_hub_weights(None, MiTBackbone, ARCHITECTURES, "b0", {}, "segformer")  # doctest: +SKIP
        (None, None, ([4.36..., 4.46..., 4.44...], [-2.11..., -2.03..., -1.80...]))
    """
    from segkit.models.blocks import IMAGENET_MEAN, IMAGENET_STD

    rescaling = ([1.0 / s for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    weights = parse_encoder_weights(encoder_weights, presets=True)
    if weights == "imagenet":
        if imagenet_presets.get(variant) is None:
            raise UserError(
                f"encoder_weights: keras-hub has no ImageNet weights for the {model} variant {variant!r}; "
                f"pass a keras-hub preset, e.g. one of {_presets_of(backbone_class)}"
            )
        weights = KerasHubPreset(imagenet_presets[variant], local=False)
    if not isinstance(weights, KerasHubPreset):
        return weights, None, rescaling
    backbone = load_preset_backbone(weights, backbone_class, model)
    config = backbone.get_config()
    found = {key: _as_lists(config.get(key)) for key in architectures[variant]}
    if found != _as_lists(architectures[variant]):
        same = [name for name, arch in architectures.items() if _as_lists(arch) == found]
        hint = (f"pass variant={same[0]!r} (--variant {same[0]})" if same
                else "its architecture is none of the variants")
        raise UserError(
            f"encoder_weights: preset {weights.handle!r} holds a {backbone_class.__name__} that is not "
            f"the {model} variant {variant!r}: {hint}"
        )
    return weights, backbone, preset_rescaling(weights) or rescaling


def _as_lists(value):
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _presets_of(backbone_class):
    return sorted(backbone_class.presets)


def load_preset_weights(backbone, encoder, handle):
    """Copy the weights of a keras-hub `backbone` into `encoder`, our model of the same layers.

    Returns:
        The report "loaded weights for N of N encoder layers from keras-hub preset HANDLE".
    """
    loaded = copy_weights_in_order(backbone, encoder)
    return f"loaded weights for {loaded} of {loaded} encoder layers from keras-hub preset {handle}"
