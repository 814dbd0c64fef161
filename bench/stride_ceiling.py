"""The best IoU a model whose logits come out at stride s can score on a split, class by class.

    python -m bench.stride_ceiling --dataset camvid --data-dir ../shared/datasets/camvid --split val --strides 8 4 2

Each label mask is padded bottom/right to a multiple of 32 (as evaluate.py pads images), turned into
one-hot maps (ignored pixels count for no class), averaged over s x s cells (the share of each class in
each output pixel: a perfect prediction at stride s), resized back bilinearly as the models resize their
logits, and its argmax is scored against the mask with the toolkit's own confusion matrix. A network's
logits are not limited to class shares, so a sharp one can land a little above these figures, but a
class whose ceiling is low at the model's stride (CamVid's poles at stride 8) needs a finer head, larger
input frames or both, not more training.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from segkit import data  # noqa: E402
from segkit.data.common import IGNORE  # noqa: E402
from segkit.errors import UserError  # noqa: E402
from segkit.metrics import ConfusionMatrix  # noqa: E402
from segkit import cli  # noqa: E402
from segkit.config import parse_data_options  # noqa: E402
from segkit.inference.predictor import MULTIPLE  # noqa: E402


def stride_prediction(mask: np.ndarray, num_classes: int, stride: int) -> np.ndarray:
    """(H, W) int labels -> (H, W) labels of the perfect stride-`stride` prediction of class shares.

    Example:
        >>> mask = np.zeros((32, 32), np.int32); mask[:, 16] = 1  # a 1-pixel line in an 8-pixel cell
        >>> int((stride_prediction(mask, 2, 8) == 1).sum())  # the cell is 1/8 line: the line is lost
        0
    """
    height, width = mask.shape
    padded = np.pad(mask, ((0, -height % MULTIPLE), (0, -width % MULTIPLE)), constant_values=IGNORE)
    shares = tf.one_hot(padded, num_classes)[None]  # ignored pixels (255) are all-zero rows
    shares = tf.nn.avg_pool2d(shares, stride, stride, "VALID")
    back = tf.image.resize(shares, padded.shape, method="bilinear")[0, :height, :width]
    return tf.argmax(back, axis=-1, output_type=tf.int32).numpy()


def stride_ceiling(masks, num_classes: int, strides) -> dict:
    """{stride: ConfusionMatrix scores (per-class IoU, mIoU, ...)} over an iterable of (H, W) masks."""
    matrices = {s: ConfusionMatrix(num_classes, ignore_index=IGNORE) for s in strides}
    for mask in masks:
        for stride, matrix in matrices.items():
            matrix.update_labels(mask[None], stride_prediction(mask, num_classes, stride)[None])
    return {stride: matrix.report() for stride, matrix in matrices.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="sample", help=f"one of {sorted(data.DATASETS)}")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-option", action="append", default=None, metavar="KEY=VALUE")
    parser.add_argument("--split", default="val")
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 4, 2])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    bad = [s for s in args.strides if s < 1 or MULTIPLE % s]
    if bad:
        raise UserError(f"--strides must divide {MULTIPLE}, got {bad[0]}")
    ds, info = data.load_dataset(args.dataset, args.data_dir, args.split, **parse_data_options(args.data_option))
    names = list(info.class_names)
    with data.data_errors_as_user_errors(info):
        masks = (mask.numpy() for _, mask in ds)
        results = stride_ceiling(masks, len(names), args.strides)
    print(f"{args.dataset}/{args.split}: the IoU of a perfect prediction at each output stride")
    print("stride " + " ".join(f"{n[:10]:>10}" for n in names) + "       mIoU")
    for stride, report in results.items():
        ious = " ".join(f"{v:10.3f}" for v in report["per_class_iou"])
        print(f"{stride:6d} {ious} {report['miou']:10.4f}")
    if args.json:
        from segkit.fileio import write_json

        write_json(args.json, {"dataset": args.dataset, "split": args.split, "class_names": names,
                               "strides": {str(s): r for s, r in results.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
