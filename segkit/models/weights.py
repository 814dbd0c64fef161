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

import dataclasses
import os
import re
import urllib.error
import warnings

import h5py
import keras

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


def _is_download_failure(error):
    # keras.utils.get_file wraps HTTPError/URLError into a bare Exception("URL fetch failure on
    # <url>: ..."); socket-level failures that urlretrieve lets through are OSErrors.
    if type(error) is Exception and str(error).startswith("URL fetch failure"):
        return True
    return isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError))


def keras_application(factory, encoder, weights, **kwargs):
    """`factory(weights=..., **kwargs)` for a keras.applications constructor.

    `weights` is what `parse_encoder_weights` returned; a file path builds with random init
    (the file is loaded into the encoder afterwards by `load_encoder_weights`). A failed
    ImageNet download becomes a one-line UserError.

    Example:
        >>> base = keras_application(keras.applications.VGG16, "vgg16", None, include_top=False)
    """
    try:
        with warnings.catch_warnings():
            # Segmentation takes any input size; the conv weights do not depend on it.
            warnings.filterwarnings("ignore", message=".*will be loaded as the default")
            return factory(weights="imagenet" if weights == "imagenet" else None, **kwargs)
    except Exception as error:
        if weights == "imagenet" and _is_download_failure(error):
            raise UserError(no_imagenet_message(encoder, "no network?")) from error
        raise


def no_imagenet_message(encoder, reason):
    return (
        f"could not get ImageNet weights for {encoder} ({reason}); "
        f"pass --encoder-weights none or a local weights file"
    )


# ---------------------------------------------------------------------------------------------
# Loading a local file into the encoder.


def load_encoder_weights(encoder, path):
    """Copy weights from the file at `path` into the layers of `encoder` (a keras.Model).

    Only layers whose weight shapes all match are set; the others keep their values.

    Returns:
        The report "loaded weights for N of M encoder layers from PATH" (M counts the encoder
        layers that have weights).

    Raises:
        UserError: if no encoder layer matched (probably the wrong file).

    Example:
        >>> model.save_weights("a.weights.h5")  # doctest: +SKIP
        >>> load_encoder_weights(other.get_layer("encoder"), "a.weights.h5")  # doctest: +SKIP
        'loaded weights for 104 of 104 encoder layers from a.weights.h5'
    """
    targets = [layer for layer in encoder.layers if layer.weights]
    if path.endswith(".keras"):
        loaded = _load_by_name(targets, _layer_arrays_from_keras_file(path))
    elif path.endswith(".weights.h5"):
        with h5py.File(path, "r") as file:
            loaded = _load_by_path(encoder, file)
    else:
        with h5py.File(path, "r") as file:
            loaded = _load_by_name(targets, _layer_arrays_from_legacy_h5(file))
    if loaded == 0:
        raise UserError(
            f"encoder_weights: no layer of the {encoder.name} matched a layer with the same "
            f"name and weight shapes in {path}"
        )
    return f"loaded weights for {loaded} of {len(targets)} encoder layers from {path}"


def _shapes_match(layer, arrays):
    return len(arrays) == len(layer.weights) and all(
        tuple(a.shape) == tuple(w.shape) for a, w in zip(arrays, layer.weights)
    )


def _load_by_name(targets, arrays_by_name):
    loaded = 0
    for layer in targets:
        for arrays in arrays_by_name.get(layer.name, []):
            if _shapes_match(layer, arrays):
                layer.set_weights(arrays)
                loaded += 1
                break
    return loaded


def _layer_arrays_from_keras_file(path):
    """{layer name: [weights of each layer with that name]} over all (nested) layers."""
    model = keras.saving.load_model(path, compile=False)
    found = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        elif layer.weights:
            found.setdefault(layer.name, []).append(layer.get_weights())
    return found


def _layer_arrays_from_legacy_h5(file):
    # Keras 2 layout (keras.applications' downloads, `model.save("x.h5")`):
    # attrs["layer_names"], one group per layer with attrs["weight_names"].
    if "layer_names" not in file.attrs and "model_weights" in file:
        file = file["model_weights"]
    found = {}
    for name in file.attrs.get("layer_names", []):
        name = name.decode() if isinstance(name, bytes) else name
        group = file[name]
        weight_names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        if weight_names:
            found.setdefault(name, []).append([group[n][()] for n in weight_names])
    return found


def _snake_case(name):
    # Same as keras.src.utils.naming.to_snake_case, which names groups in .weights.h5 files.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_paths(model):
    """Yield (path, layer) as Keras names them in a .weights.h5 file, relative to `model`."""
    used = {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        used[base] = used.get(base, -1) + 1
        yield f"layers/{base}" + (f"_{used[base]}" if used[base] else ""), layer


def _load_by_path(encoder, file):
    # The encoder sits at the file's root (a bare keras.applications model was saved) or is one
    # nested model `layers/functional[_k]` of a whole segmentation model: try every candidate
    # and keep the one where most layers match.
    roots = [file]
    if "layers" in file:
        roots += [g for g in file["layers"].values() if isinstance(g, h5py.Group) and "layers" in g]
    best = []
    for root in roots:
        matches = []
        for path, layer in _layer_paths(encoder):
            if not layer.weights or f"{path}/vars" not in root:
                continue
            group = root[f"{path}/vars"]
            arrays = [group[str(i)][()] for i in range(len(group))]
            if _shapes_match(layer, arrays):
                matches.append((layer, arrays))
        if len(matches) > len(best):
            best = matches
    for layer, arrays in best:
        layer.set_weights(arrays)
    return len(best)


# ---------------------------------------------------------------------------------------------
# keras-hub presets.


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
        assert _shapes_match(dst, arrays), (src.name, dst.name)
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
