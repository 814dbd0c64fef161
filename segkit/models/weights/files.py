"""A local weights file (.keras, Keras 2 .h5, Keras 3 .weights.h5) copied into an encoder's layers."""

from __future__ import annotations

import re

import h5py
import keras

from segkit.errors import UserError


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


def shapes_match(layer, arrays):
    return len(arrays) == len(layer.weights) and all(
        tuple(a.shape) == tuple(w.shape) for a, w in zip(arrays, layer.weights)
    )


def _load_by_name(targets, arrays_by_name):
    loaded = 0
    for layer in targets:
        for arrays in arrays_by_name.get(layer.name, []):
            if shapes_match(layer, arrays):
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
            if shapes_match(layer, arrays):
                matches.append((layer, arrays))
        if len(matches) > len(best):
            best = matches
    for layer, arrays in best:
        layer.set_weights(arrays)
    return len(best)
