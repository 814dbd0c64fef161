"""Encoder weights: random init, keras.applications' ImageNet weights, or a local file.

`encoder_weights` (the `--encoder-weights` flag) is one of
    None / "none"   random initialisation;
    "imagenet"      keras.applications' weights, downloaded once into ~/.keras/models
                    (offline: copy the .h5 file there by hand, or pass it as a path);
    a file path     build with random init, then copy weights into the ENCODER layers:
        .keras       any saved Keras model: matched by layer name;
        .h5/.hdf5    Keras 2 / keras.applications weight files: matched by layer name;
        .weights.h5  Keras 3 weight files store no layer names (Keras addresses layers by
                     class name and position, see keras/src/saving/saving_lib.py), so the
                     encoder is matched by that same path scheme: this works for files saved
                     from a model of this package or from a bare keras.applications encoder.
                     A layer is loaded only if its weight shapes match; the builder prints
                     "loaded weights for N of M encoder layers from PATH".
"""

import os
import re
import urllib.error
import warnings
import zipfile

import h5py
import keras

from errors import UserError

WEIGHT_FILE_SUFFIXES = (".keras", ".weights.h5", ".h5", ".hdf5")


def parse_encoder_weights(encoder_weights):
    """Return None, "imagenet" or the path of an existing weights file.

    Example:
        >>> parse_encoder_weights("none") is None
        True
    """
    if encoder_weights is None or encoder_weights in ("none", "None"):
        return None
    if encoder_weights == "imagenet":
        return "imagenet"
    if not isinstance(encoder_weights, (str, os.PathLike)):
        raise UserError(
            f"encoder_weights must be None, 'none', 'imagenet' or a path to a weights file, "
            f"got {encoder_weights!r}"
        )
    path = os.fspath(encoder_weights)
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise UserError(
            f"encoder_weights: {path!r} is neither 'none', 'imagenet' nor a weights file "
            f"ending in {' / '.join(WEIGHT_FILE_SUFFIXES)}"
        )
    if not os.path.isfile(path):
        raise UserError(f"encoder_weights: file {path!r} does not exist")
    return path


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
