"""The model to export, as a traceable float32 function: a Keras model or a training SavedModel
(unet_tf), loaded by segkit.inference.loading like everywhere else.

Models trained in mixed precision are rewritten to compute in float32 (`float32_model`): exported
graphs hold no casts or half-precision arithmetic; quantization is the converter's business.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow as tf

from segkit.errors import UserError
from segkit.inference.loading import LoadedModel, load_model
from segkit.runtime import HALF, with_policies


@dataclasses.dataclass
class Source:
    """A model to export: `forward` maps float32 (N, H, W, 3) in [0, 1] to float32 logits."""

    kind: str  # "keras" or "savedmodel"
    path: Path
    forward: object  # traceable by tf.function
    trackable: object  # owns the variables: the Keras model's tf.Variables or the loaded SavedModel
    info: dict | None  # class_names, colors, config (None: unknown)
    note: str = ""  # said once when exporting, e.g. a precision change
    model: object = None  # the float32 Keras model, for --format keras
    members: tuple = ()  # an ensemble's model paths (`path` is the first)


def float32_model(model):
    """`model` itself if it computes in float32, else a float32 copy with the same weights.

    A mixed_bfloat16 / mixed_float16 model would put casts and half-precision arithmetic into the
    exported graph; exported models compute in float32 (quantization is TFLite's business)."""
    copy, replaced = with_policies(model, lambda policy, layer: "float32" if policy in HALF else policy)
    if replaced:
        copy.replaced_policies = sorted(replaced)
    return copy


def keras_variables(model) -> list:
    """The tf.Variables behind a Keras model's weights. A SavedModel that tracks these rather than
    the Keras model holds no Keras objects (plain TensorFlow loads it) and saves 40% faster."""
    return [getattr(v, "value", v) for v in model.weights]


def from_loaded(loaded: LoadedModel) -> Source:
    """A Source for a model loaded by segkit.inference.loading; TFLite files and serving SavedModels are refused."""
    if loaded.kind == "tflite":
        raise UserError(f"--model {str(loaded.path)!r} is already a TFLite file; export from the run folder instead")
    if loaded.kind == "savedmodel":
        if loaded.input_dtype != tf.float32:
            raise UserError(f"SavedModel {loaded.path} is not a training SavedModel (float32 images -> logits); "
                            f"it looks exported already: export from the run folder instead")
        signature, name = loaded.forward.signature, loaded.forward.input_name
        return Source("savedmodel", loaded.path, lambda x: signature(**{name: x})["logits"], loaded.trackable,
                      loaded.info)
    exported = float32_model(loaded.keras_model)
    note = "" if exported is loaded.keras_model else \
        f"{loaded.path} computes in {', '.join(exported.replaced_policies)}; exported in float32"
    return Source("keras", loaded.path, lambda x: exported(x, training=False), keras_variables(exported),
                  loaded.info, note, model=exported)


def load_source(path) -> Source:
    """The model at `path` (a run folder, .keras file or unet_tf SavedModel folder), ready to export; a list of
    two or more run folders or .keras files is their ensemble (segkit.models.ensemble)."""
    if isinstance(path, (list, tuple)):
        return ensemble_source([Path(p) for p in path]) if len(path) > 1 else load_source(path[0])
    return from_loaded(load_model(path))


def ensemble_source(paths: list) -> Source:
    """The ensemble of the Keras models at `paths` (the mean of their class probabilities), as one Source whose
    info (classes, the run's config) is the first model's, with "members": each model's path and config (and its
    own "members" when it is an ensemble already); the models must name the same classes."""
    from segkit.models.ensemble import build_ensemble

    if len(set(p.resolve() for p in paths)) != len(paths):
        raise UserError(f"--model names the same model twice: {' '.join(map(str, paths))}")
    sources = [from_loaded(load_model(p)) for p in paths]
    for source in sources:
        if source.kind != "keras":
            raise UserError(f"an ensemble takes Keras models (run folders or .keras files); {source.path} is a "
                            f"{source.kind}")
    names = [(s.info or {}).get("class_names") for s in sources]
    for source, classes in zip(sources[1:], names[1:]):
        if classes != names[0]:
            raise UserError(f"{source.path} predicts {classes}, {sources[0].path} {names[0]}: an ensemble's models "
                            f"must predict the same classes")
    model = build_ensemble([s.model for s in sources])
    notes = "; ".join(s.note for s in sources if s.note)
    members = [{"source": str(s.path), "config": (s.info or {}).get("config", {}),
                **({"members": s.info["members"]} if "members" in (s.info or {}) else {})} for s in sources]
    info = {**(sources[0].info or {}), "members": members}
    return Source("keras", sources[0].path, lambda x: model(x, training=False), keras_variables(model),
                  info, notes, model=model, members=tuple(s.path for s in sources))
