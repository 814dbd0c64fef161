"""Score a trained model on a dataset split, at each label's own resolution.

    python evaluate.py --model runs/sample-mobilenetv2_pix2pix-...        # the run's dataset, val split
    python evaluate.py --model pretrained/camvid.keras --dataset camvid --data-dir ../shared/datasets/camvid
    python evaluate.py --model model.tflite --dataset sample --json
    python evaluate.py --model RUN --tta flip --scales 0.75 1 1.25 --out eval/

--model takes a run folder, a .keras file, a SavedModel folder or a .tflite file. Metrics
come from one confusion matrix over the whole split (metrics.ConfusionMatrix): per-class
IoU, Dice, precision, recall, pixel share, and the mean IoU on the last line.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import heapq
import json
import math
import sys
from pathlib import Path

import numpy as np

import cli
import data
import metrics
import visualize
from config import write_json_atomic
from data.common import evenly_spaced
from errors import UserError
from inference import load_predictor


def add_tta_flags(parser):
    """--tta and --scales (Predictor.logits' test-time augmentation); bench.latency times them too."""
    parser.add_argument("--tta", choices=("none", "flip"), default="none", help="flip: average with the mirrored image")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="multi-scale test-time augmentation, e.g. 0.75 1 1.25")


def check_scales(scales) -> tuple:
    if any(s <= 0 for s in scales):
        raise UserError(f"--scales must be positive, got {scales}")
    return tuple(scales)


def add_inference_flags(parser):
    """Test-time options shared with predict.py."""
    add_tta_flags(parser)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="run the model at this size and resize its logits back (default: native size)")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                        help="sliding-window inference with tiles of this size for larger images")
    parser.add_argument("--threads", type=int, help="threads for a .tflite model")


def inference_options(args) -> dict:
    for key in ("image_size", "window"):
        size = getattr(args, key)
        if size is not None and any(s <= 0 or s % 32 for s in size):
            raise UserError(f"--{key.replace('_', '-')} must be two positive multiples of 32, got {size}")
    return {"tta": args.tta, "scales": check_scales(args.scales), "input_size": args.image_size and tuple(args.image_size),
            "window": args.window and tuple(args.window)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder, .keras file, SavedModel folder or .tflite file")
    parser.add_argument("--dataset", help="dataset name (default: the run's)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--split", default=None, help="split to score (default: the run's validation split)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", help="also write metrics.json, confusion.png, worst.png and samples.png here")
    parser.add_argument("--worst", type=int, default=6, help="how many worst-scoring images --out draws")
    parser.add_argument("--samples", type=int, default=4,
                        help="how many images, evenly spaced over the split, --out draws in samples.png")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    add_inference_flags(parser)
    return parser.parse_args(argv)


def image_miou(true, pred, num_classes, ignore_index) -> float:
    """Mean IoU of one image (classes absent from both label and prediction left out)."""
    keep = (true != ignore_index) & (true >= 0) & (true < num_classes)
    cm = np.bincount(true[keep] * num_classes + pred[keep], minlength=num_classes ** 2).reshape(num_classes, -1)
    iou = np.asarray(metrics.scores_from_confusion(cm)["per_class_iou"], np.float64)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def evaluate(predictor, ds, info, options, limit=None, worst=0, samples=0):
    """(report dict, number of images, worst examples, sample examples) over a dataset of (image, mask).

    Samples are `samples` (image, mask, pred) triples at evenly spaced positions of the split."""
    total = int(ds.cardinality())  # negative when unknown
    if limit is not None:
        total = limit if total < 0 else min(total, limit)
    wanted = evenly_spaced(total, samples)
    sample_list = []
    size = max(info.num_classes, 2)
    metric = metrics.ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index, name="miou")
    worst_heap = []  # (-score, index, image, mask, pred) of the lowest-scoring images
    count = 0
    for index, (image, mask) in enumerate(ds.as_numpy_iterator()):
        if limit is not None and index >= limit:
            break
        pred = predictor.labels(image, **options)
        metric.update_labels(mask, pred)
        count += 1
        if index in wanted:
            sample_list.append((image, mask, pred))
        if worst:
            score = image_miou(mask, pred, size, info.ignore_index)
            if math.isfinite(score):
                heapq.heappush(worst_heap, (-score, index, image, mask, pred))
                if len(worst_heap) > worst:
                    heapq.heappop(worst_heap)
    names = list(info.class_names) if info.num_classes > 1 else ["background", info.class_names[0]]
    report = metric.report(names)
    worst_list = sorted(worst_heap, key=lambda e: -e[0])
    return report, count, [(-s, i, im, m, p) for s, i, im, m, p in worst_list], sample_list


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


def main(argv=None) -> int:
    args = parse_args(argv)
    options = inference_options(args)
    predictor = load_predictor(args.model, num_threads=args.threads)
    run_config = predictor.info.get("config", {})
    dataset = args.dataset or run_config.get("dataset")
    if dataset is None:
        raise UserError(f"--dataset is needed: {args.model} does not record which dataset it was trained on")
    data_dir = args.data_dir if args.dataset or args.data_dir else run_config.get("data_dir")
    split = args.split or run_config.get("val_split", "val")
    ds, info = data.load_dataset(dataset, data_dir, split)
    if predictor.num_classes != info.num_classes:
        raise UserError(f"{args.model} predicts {predictor.num_classes} classes but {info.name} has {info.num_classes}")
    with data.data_errors_as_user_errors(info):
        report, count, worst, samples = evaluate(predictor, ds, info, options, args.limit,
                                                 args.worst if args.out else 0, args.samples if args.out else 0)
    result = as_json(report, count)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", result)
        visualize.plot_confusion(report["confusion_matrix"], report["class_names"], out / "confusion.png")
        if worst:
            rows = [(image, mask, pred) for _, _, image, mask, pred in worst]
            visualize.save_image(visualize.stitch(rows, info.class_names, info.colors), out / "worst.png")
            (out / "worst.txt").write_text("".join(f"{info.files[i][0] if info.files else i}\tmIoU {s:.4f}\n"
                                                   for s, i, *_ in worst))
        if samples:
            visualize.save_image(visualize.stitch(samples, info.class_names, info.colors), out / "samples.png")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{predictor.kind} model {predictor.path} on {info.name}/{split}: {count} images")
        print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
