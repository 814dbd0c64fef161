"""The Python API: what the commands do, as functions a notebook or another project calls.

    import segkit

    result = segkit.train(segkit.TrainConfig(dataset="sample", model="ddrnet", epochs=5))   # a run folder
    model = segkit.load_model(result.run_dir)          # or "pretrained/camvid.keras", a .tflite, .onnx, SavedModel
    labels = model.labels(image)                       # (H, W) class indices for an (H, W, 3) image
    scores = segkit.evaluate(result.run_dir, split="val")
    segkit.export(result.run_dir, "tflite", "model_int8.tflite", quantize="int8")

Each function imports TensorFlow when it is first called, not when segkit is imported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from segkit.config import TrainConfig, validate

if TYPE_CHECKING:  # for the hints only: importing these pulls in TensorFlow
    from segkit.exporters import ExportResult
    from segkit.inference.predictor import Predictor
    from segkit.inference.scoring import Evaluation
    from segkit.training.trainer import TrainResult


def train(config: TrainConfig | None = None, **fields) -> "TrainResult":
    """Train a new run: `config`, with any TrainConfig field overridden by keyword (train(epochs=5) trains the
    default model on the bundled sample). Returns a TrainResult (run_dir, best_miou, best_epoch, epochs,
    stopped); the run folder is the command's (config.json, history.csv, model.keras, checkpoints/)."""
    from segkit.training import trainer

    config = dataclasses.replace(config or TrainConfig(), **fields)
    for key in ("image_size", "val_image_size"):
        if isinstance(getattr(config, key), list):
            setattr(config, key, tuple(getattr(config, key)))
    validate(config)
    return trainer.train(config)


def resume(run_dir: str | Path, epochs: int | None = None) -> "TrainResult":
    """Continue the run in `run_dir` from its newest checkpoint, exactly as an unbroken run would have gone on;
    `epochs` changes its length."""
    from segkit.training import trainer

    return trainer.resume(run_dir, epochs=epochs)


def load_model(path: str | Path, num_threads: int | None = None) -> "Predictor":
    """A Predictor for the model at `path`: a run folder, a .keras file, a SavedModel folder, a .tflite or an .onnx
    file (checked first, with its class names and colours from the run or the sidecar). `num_threads`: for
    .tflite files. Its `.labels(image)` and `.logits(image)` take float images in [0, 1] or uint8 images."""
    from segkit.inference.predictor import load_predictor

    return load_predictor(path, num_threads=num_threads)


def evaluate(model: "str | Path | Predictor", *, dataset: str | None = None, data_dir: str | Path | None = None,
             split: str | None = None, data_options: dict | None = None, limit: int | None = None,
             tta: str = "none", scales: tuple = (1.0,), input_size: tuple | None = None,
             window: tuple | None = None, batch_size: int = 8, worst: int = 0, samples: int = 0) -> "Evaluation":
    """Score `model` (a path or a Predictor) on a dataset split: by default the dataset, folder, loader options
    and validation split its run recorded. Returns an Evaluation whose `.report` holds per-class IoU, Dice,
    precision and recall and `.report["miou"]` the mean IoU; `worst` / `samples` keep that many of the
    lowest-scoring / evenly spaced images with their predictions (`.worst`, `.samples`), for pictures."""
    from segkit.inference import scoring

    return scoring.evaluate_model(model, dataset=dataset, data_dir=data_dir, split=split, data_options=data_options,
                                  limit=limit, batch_size=batch_size, tta=tta, scales=tuple(scales),
                                  input_size=input_size and tuple(input_size), window=window and tuple(window),
                                  worst=worst, samples=samples)


def export(model: str | Path | list, format: str, out: str | Path, *, quantize: str | None = None,
           image_size: tuple | None = None, dataset: str | None = None, data_dir: str | Path | None = None,
           data_options: dict | None = None, calibration_images: int = 64, check_images: int = 4,
           recipe: str | None = None) -> "ExportResult":
    """Export the model at `model` (a run folder or a .keras file; a list of them: their ensemble, the mean of
    their class probabilities) as `format` (segkit.catalog.EXPORT_FORMATS)
    into `out`, checked against the source on validation images before it is written (with its sidecar
    <stem>.json: class names, colours, how it was made). `quantize` (tflite, web): none, fp16, dynamic or int8,
    by default none for tflite and int8 for web (a static site for browsers)."""
    from segkit import exporters

    return exporters.export_model(model, format, out, quantize=quantize, image_size=image_size and tuple(image_size),
                                  dataset=dataset, data_dir=data_dir, data_options=data_options,
                                  calibration_count=calibration_images, check_count=check_images, recipe=recipe)
