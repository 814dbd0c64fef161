"""Scoring a trained model on a dataset split, at each label's own resolution: the API behind evaluate.py.

    result = scoring.evaluate_model("runs/RUN")                        # the run's dataset and val split
    result = scoring.evaluate_model("model.tflite", dataset="camvid", data_dir=DIR, split="test", tta="flip")
    print(scoring.table(result.report)); scoring.as_json(result.report, result.count)

Metrics come from one confusion matrix over the whole split (metrics.ConfusionMatrix): per-class IoU,
Dice, precision, recall, pixel share, and the mean IoU. `write_outputs` adds metrics.json,
confusion.png, the lowest-scoring images (worst.png) and evenly spaced samples (samples.png).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from pathlib import Path

import numpy as np

from segkit import data
from segkit import metrics
from segkit.data.common import evenly_spaced
from segkit.errors import UserError
from segkit import fileio, visualize
from segkit.config import run_loader_options
from segkit.inference.predictor import Predictor, load_predictor


@dataclasses.dataclass
class Evaluation:
    report: dict  # metrics.ConfusionMatrix.report: per-class scores, miou, confusion matrix
    count: int  # images scored
    predictor: Predictor
    info: data.DatasetInfo
    split: str
    worst: list  # (score, index, image, mask, pred) of the lowest-scoring images, worst first
    samples: list  # (image, mask, pred) at evenly spaced positions


def image_miou(true, pred, num_classes, ignore_index) -> float:
    """Mean IoU of one image (classes absent from both label and prediction left out)."""
    keep = (true != ignore_index) & (true >= 0) & (true < num_classes)
    cm = np.bincount(true[keep] * num_classes + pred[keep], minlength=num_classes ** 2).reshape(num_classes, -1)
    iou = np.asarray(metrics.scores_from_confusion(cm)["per_class_iou"], np.float64)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def _same_size_batches(ds, limit, batch_size):
    """(first index, images, masks) for runs of up to `batch_size` consecutive same-sized examples."""
    images, masks, first = [], [], 0
    for index, (image, mask) in enumerate(ds.as_numpy_iterator()):
        if limit is not None and index >= limit:
            break
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield first, np.stack(images), masks
            images, masks, first = [], [], index
        images.append(image)
        masks.append(mask)
    if images:
        yield first, np.stack(images), masks


def score(predictor, ds, info, options, limit=None, worst=0, samples=0, batch_size=8, progress=None):
    """(report dict, number of images, worst examples, sample examples) over a dataset of (image, mask).

    Consecutive images of the same size are predicted `batch_size` at a time (one model call per view);
    `progress(done, total)` is called after each batch (total < 0 when the split's size is unknown).
    Samples are `samples` (image, mask, pred) triples at evenly spaced positions of the split."""
    total = int(ds.cardinality())  # negative when unknown
    if limit is not None:
        total = limit if total < 0 else min(total, limit)
    wanted = evenly_spaced(total, samples)
    sample_list = []
    size = max(info.num_classes, 2)
    metric = metrics.ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index, name="miou")
    worst_heap = []  # (-score, index, image, mask, pred) of the lowest-scoring images
    count, checked = 0, None
    for first, images, masks in _same_size_batches(ds, limit, batch_size):
        if images.shape != checked:  # a size (or batch) not seen yet: would it fit in memory?
            predictor.check_memory(*images.shape[1:3], options, what=f"{info.name}/{info.split} image {first}",
                                   batch=len(images))
            checked = images.shape
        preds = predictor.labels_batch(images, **options)
        for index, image, mask, pred in zip(range(first, first + len(masks)), images, masks, preds):
            metric.update_labels(mask, pred)
            count += 1
            if index in wanted:
                sample_list.append((image, mask, pred))
            if worst:
                value = image_miou(mask, pred, size, info.ignore_index)
                if math.isfinite(value):
                    heapq.heappush(worst_heap, (-value, index, image, mask, pred))
                    if len(worst_heap) > worst:
                        heapq.heappop(worst_heap)
        if progress is not None:
            progress(count, total)
    names = list(info.class_names) if info.num_classes > 1 else ["background", info.class_names[0]]
    report = metric.report(names)
    worst_list = sorted(worst_heap, key=lambda e: -e[0])
    return report, count, [(-s, i, im, m, p) for s, i, im, m, p in worst_list], sample_list


def evaluate_model(model, *, dataset=None, data_dir=None, split=None, data_options=None, limit=None, worst=0,
                   samples=0, num_threads=None, batch_size=8, progress=None, **options) -> Evaluation:
    """Score `model` (a path, or a Predictor) on a split: by default the dataset, folder, loader options and
    validation split its run recorded; `data_options` (a dict or KEY=VALUE strings) add or override
    loader options. `options` are Predictor.logits' (tta, scales, input_size, window); batch_size and
    progress as in `score`."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    predictor = model if isinstance(model, Predictor) else load_predictor(model, num_threads=num_threads)
    run_config = predictor.info.get("config", {})
    name = dataset or run_config.get("dataset")
    if name is None:
        raise UserError(f"--dataset is needed: {predictor.path} does not record which dataset it was trained on")
    split = split or run_config.get("val_split", "val")
    ds, info = data.load_run_data(predictor.path, run_config, name, split, dataset=dataset, data_dir=data_dir,
                                  **run_loader_options(run_config, dataset, data_options))
    if predictor.num_classes != info.num_classes:
        raise UserError(f"{predictor.path} predicts {predictor.num_classes} classes but {info.name} has {info.num_classes}")
    with data.data_errors_as_user_errors(info):
        report, count, worst_list, sample_list = score(predictor, ds, info, options, limit, worst, samples,
                                                       batch_size, progress)
    if count == 0:
        raise UserError(f"{info.name}/{split} has no images to score")
    return Evaluation(report, count, predictor, info, split, worst_list, sample_list)


def as_json(report, count) -> dict:
    def clean(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    names = report["class_names"]
    return {
        "miou": clean(report["miou"]), "mean_dice": clean(report["mean_dice"]),
        "pixel_accuracy": clean(report["pixel_accuracy"]),
        "per_class_iou": {n: clean(v) for n, v in zip(names, report["per_class_iou"])},
        "per_class_dice": {n: clean(v) for n, v in zip(names, report["per_class_dice"])},
        "per_class_precision": {n: clean(v) for n, v in zip(names, report["per_class_precision"])},
        "per_class_recall": {n: clean(v) for n, v in zip(names, report["per_class_recall"])},
        "confusion_matrix": report["confusion_matrix"], "class_names": names, "num_images": count,
    }


def table(report) -> str:
    def fmt(v):
        return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.4f}"

    width = max(12, max(len(n) for n in report["class_names"]))
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}  {'prec':>6}  {'recall':>6}  {'pixels':>6}"]
    for k, name in enumerate(report["class_names"]):
        lines.append(f"{name:<{width}}  {fmt(report['per_class_iou'][k])}  {fmt(report['per_class_dice'][k])}  "
                     f"{fmt(report['per_class_precision'][k])}  {fmt(report['per_class_recall'][k])}  "
                     f"{report['pixel_share'][k] * 100:5.1f}%")
    lines.append(f"pixel accuracy: {report['pixel_accuracy']:.4f}   mean Dice: {report['mean_dice']:.4f}")
    lines.append(f"mIoU: {report['miou']:.4f}")
    return "\n".join(lines)


OUT_FILES = ("metrics.json", "confusion.png", "worst.png", "worst.txt", "samples.png")


def check_out(out) -> Path:
    """Refuse, before any scoring, an --out folder that holds files evaluate did not write: the outputs replace
    the folder whole (one set, never the pictures of one model beside the figures of another)."""
    out = fileio.check_writable(out, "--out", kind="folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUT_FILES and not p.name.startswith("."))
        if foreign:
            raise UserError(f"--out {str(out)!r} holds files that evaluate did not write ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); give a new folder or one an earlier evaluate "
                            "wrote")
    return out


def write_outputs(result: Evaluation, out) -> None:
    """metrics.json, confusion.png, worst.png + worst.txt and samples.png (as far as there are any) as the folder
    `out`: written beside it and swapped in whole, so an earlier evaluation's files never stay beside these."""
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = result.info
    with fileio.atomic_path(out) as folder:
        folder.mkdir()
        fileio.write_json(folder / "metrics.json", as_json(result.report, result.count))
        visualize.plot_confusion(result.report["confusion_matrix"], result.report["class_names"],
                                 folder / "confusion.png")
        if result.worst:
            rows = [(image, mask, pred) for _, _, image, mask, pred in result.worst]
            visualize.save_image(visualize.stitch(rows, info.class_names, info.colors), folder / "worst.png")
            fileio.write_text(folder / "worst.txt", "".join(f"{info.files[i][0] if info.files else i}\tmIoU {s:.4f}\n"
                                                            for s, i, *_ in result.worst))
        if result.samples:
            visualize.save_image(visualize.stitch(result.samples, info.class_names, info.colors),
                                 folder / "samples.png")
