"""segkit: semantic segmentation in Keras 3: datasets, models, losses, metrics, training, evaluation, export.

    import segkit

    result = segkit.train(segkit.TrainConfig(dataset="sample", epochs=5))
    model = segkit.load_model("pretrained/camvid.keras")
    labels = model.labels(image)                                  # (H, W) class indices
    print(segkit.evaluate(result.run_dir).report["miou"])
    segkit.export(result.run_dir, "tflite", "model.tflite")

The API is segkit.api; the command line is segkit.cli (`segkit train|evaluate|predict|export|verify`). The
rooms, each a subpackage or module, by job:

    catalog     what exists: models and their facts, datasets, losses, every flag's choices (no TensorFlow)
    config      TrainConfig: every setting of a run, the flags that mirror it, validation
    data/       datasets in their public layouts (one registry, one contract), augmentation, verify
    models/     the models, their blocks and pretrained-weight loading
    losses/     Dice, Tversky, cross-entropies and their sums;   metrics/: the streaming confusion matrix
    training/   trainer (train, resume), the data of a run, the two loops, schedule, run folder, recorder
    inference/  loading any saved model, Predictor, scoring a split, predicting files and videos, TFLite
    exporters/  SavedModel, TFLite, ONNX and .keras exports checked against their source
    cli/        one module per command, and the flags they share
    runtime, memory, fileio, visualize, errors: precision and strategy, memory estimates, safe writes,
                pictures, the one user-facing exception

`import segkit` is fast: TensorFlow is imported by the first call that needs it. Keras finds our layers,
losses and metrics when it loads a .keras file (`keras.saving.load_model`) as soon as both segkit and Keras
are imported, in either order: they are registered when Keras is imported (or at once, if it already is).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

from segkit.api import evaluate, export, load_model, resume, train
from segkit.config import TrainConfig
from segkit.errors import UserError

__version__ = "0.3.0"
__all__ = ["Predictor", "TrainConfig", "UserError", "__version__", "evaluate", "export", "load_model", "resume",
           "train"]


def __getattr__(name):
    if name == "Predictor":  # the class, for isinstance and type hints; importing it imports TensorFlow
        from segkit.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")


def register_with_keras() -> None:
    """Register every custom layer, loss and metric of ours with Keras (importing the modules that define
    them), so that keras.saving.load_model reloads any model segkit saved."""
    importlib.import_module("segkit.models")
    importlib.import_module("segkit.losses")
    importlib.import_module("segkit.metrics")
    importlib.import_module("segkit.training.distill")  # the Distiller of --distill-from checkpoints
    importlib.import_module("segkit.training.auxiliary")  # the AuxiliaryHead of --aux-weight checkpoints


_WATCHED = ("keras", "tensorflow")  # TensorFlow imports Keras in its own import, and Keras TensorFlow in its


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Runs register_with_keras once Keras has been imported and neither Keras nor TensorFlow is still in the
    middle of its own import (our layers need both whole), whoever imports them and in whichever order."""

    def find_spec(self, name, path=None, target=None):
        if name not in _WATCHED:
            return None
        sys.meta_path.remove(self)  # so that find_spec below finds the package's own spec
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            others_done = not any(_initializing(n) for n in _WATCHED if n != name)
            if "keras" in sys.modules and others_done and self in sys.meta_path:
                sys.meta_path.remove(self)
                register_with_keras()

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules and not any(_initializing(n) for n in _WATCHED):
    register_with_keras()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
