"""One streaming confusion matrix for every segmentation score (mIoU, Dice, accuracy, precision, recall).

Rows are the true class, columns the predicted class: cm[t, p] counts valid pixels labelled t and predicted
p. Scores come from the matrix accumulated over the whole dataset, not from a mean of per-batch scores.
"""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from segkit.errors import UserError

OUTPUTS = ("miou", "mean_dice", "pixel_accuracy")


def scores_from_confusion(cm):
    """Scores of a (K, K) confusion matrix (rows = true class, columns = predicted), pure NumPy.

    With TP_c = cm[c, c], FN_c = row sum - TP_c, FP_c = column sum - TP_c:
        IoU_c       = TP_c / (TP_c + FP_c + FN_c)      (Jaccard)
        Dice_c      = 2 TP_c / (2 TP_c + FP_c + FN_c)  (F1)
        precision_c = TP_c / (TP_c + FP_c),  recall_c = TP_c / (TP_c + FN_c)
        pixel_share_c = (TP_c + FN_c) / total          (fraction of ground-truth pixels)
        pixel_accuracy = trace / total
    A ratio whose denominator is 0 is undefined and reported as NaN: IoU and Dice of a class that appears in
    neither labels nor predictions, precision of a class never predicted, recall of a class never labelled.
    miou and mean_dice are the means over the classes where they are defined (NaN if none is).

    Returns a dict of Python floats and lists: miou, mean_dice, pixel_accuracy, per_class_iou,
    per_class_dice, per_class_precision, per_class_recall, pixel_share.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise UserError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
    if not np.all(np.isfinite(cm)) or np.any(cm < 0):
        raise UserError("confusion matrix entries must be finite counts >= 0")
    tp = np.diag(cm)
    true_total = cm.sum(axis=1)  # TP + FN
    pred_total = cm.sum(axis=0)  # TP + FP
    total = cm.sum()
    iou = _ratio(tp, true_total + pred_total - tp)
    dice = _ratio(2 * tp, true_total + pred_total)
    return {
        "miou": _nanmean(iou),
        "mean_dice": _nanmean(dice),
        "pixel_accuracy": float(_ratio(tp.sum(), total)),
        "per_class_iou": iou.tolist(),
        "per_class_dice": dice.tolist(),
        "per_class_precision": _ratio(tp, pred_total).tolist(),
        "per_class_recall": _ratio(tp, true_total).tolist(),
        "pixel_share": _ratio(true_total, np.full_like(true_total, total)).tolist(),
    }


def _ratio(num, den):
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(values):
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


@keras.saving.register_keras_serializable(package="segkit")
class ConfusionMatrix(keras.metrics.Metric):
    """Streaming confusion matrix of a segmentation model; result() is mIoU (or mean Dice, pixel accuracy).

    Args:
        num_classes: number of classes C of the logits; 1 means binary (one sigmoid logit), counted as two
            classes, 0 = background and 1 = foreground (foreground when logit > 0), so the matrix is 2 x 2
            and mIoU is the mean of background and foreground IoU (per_class_iou[1] is the foreground IoU).
        ignore_index: label of pixels to skip (None: none). Labels outside [0, K) (K = max(C, 2)) are
            skipped too, like ignore_index.
        name: metric name, logged by Keras as name and val_name; defaults to `output` ("miou").
        output: what result() returns: "miou", "mean_dice" or "pixel_accuracy". Compile several
            ConfusionMatrix metrics with different outputs and names to log several.

    The counts are an int64 (K, K) variable, exact beyond 2^24 pixels; result() is float32.
    In result() and report() a class that appears in neither labels nor predictions has an undefined IoU and
    Dice and is left out of the mean; result() returns 0 while nothing has been counted, report() NaN.

    Training: model.compile(..., metrics=[ConfusionMatrix(C)]); Keras resets it each epoch (reset_state).
    Evaluation: call update_state(y_true, logits) or update_labels(y_true, pred_labels) over the dataset,
    then confusion_matrix() / report(class_names).
    """

    def __init__(self, num_classes, ignore_index=255, name=None, output="miou"):
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise UserError(f"num_classes must be an int >= 1 (1 = binary), got {num_classes!r}")
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, numbers.Integral)):
            raise UserError(f"ignore_index must be an int or None, got {ignore_index!r}")
        if output not in OUTPUTS:
            raise UserError(f"unknown output {output!r}; choose from {list(OUTPUTS)}")
        super().__init__(name=name or output)
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.output = output
        self.size = max(self.num_classes, 2)  # K: rows and columns of the matrix
        self.matrix = self.add_variable(shape=(self.size, self.size), initializer="zeros", dtype="int64",
                                        name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds one batch. y_true: labels (N, H, W) or (N, H, W, 1); y_pred: logits (N, H, W, C),
        argmax over C (C > 1) or logit > 0 (C = 1). Pixel counts are not weighted: sample_weight must be None."""
        if sample_weight is not None:
            raise UserError(f"metric {self.name!r} counts pixels and takes no sample_weight; "
                            f"skip pixels with ignore_index")
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != self.num_classes:
            raise UserError(f"y_pred has {y_pred.shape[-1]} channels (shape {tuple(y_pred.shape)}) but "
                            f"metric {self.name!r} has num_classes={self.num_classes}")
        if self.num_classes == 1:
            pred = tf.cast(y_pred[..., 0] > 0, tf.int32)
        else:
            pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        self._add(y_true, pred)

    def update_labels(self, y_true, y_pred_labels):
        """Adds predicted labels (already argmax'ed, e.g. at the original resolution), same number of pixels
        as y_true; predictions must be in [0, K) (K = 2 for binary)."""
        pred = tf.cast(y_pred_labels, tf.int32)
        checks = [tf.debugging.assert_non_negative(pred, message="predicted labels must be >= 0"),
                  tf.debugging.assert_less(pred, self.size, message=f"predicted labels must be < {self.size}")]
        with tf.control_dependencies(checks):
            pred = tf.identity(pred)
        self._add(y_true, pred)

    def _add(self, y_true, pred):
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        pred = tf.reshape(pred, [-1])
        k = self.size
        valid = (labels >= 0) & (labels < k)
        if self.ignore_index is not None:
            valid &= labels != self.ignore_index
        # Skipped pixels go to an extra bin k*k that is dropped; fixed shapes keep this XLA-friendly.
        cell = tf.where(valid, labels * k + pred, k * k)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(cell), cell, k * k + 1)[: k * k]
        self.matrix.assign_add(tf.cast(tf.reshape(counts, (k, k)), tf.int64))

    def result(self):
        cm = tf.cast(self.matrix, tf.float64)
        tp = tf.linalg.diag_part(cm)
        true_total = tf.reduce_sum(cm, axis=1)
        pred_total = tf.reduce_sum(cm, axis=0)
        if self.output == "pixel_accuracy":
            value = tf.math.divide_no_nan(tf.reduce_sum(tp), tf.reduce_sum(cm))
        else:
            if self.output == "miou":
                per_class = tf.math.divide_no_nan(tp, true_total + pred_total - tp)
            else:
                per_class = tf.math.divide_no_nan(2.0 * tp, true_total + pred_total)
            defined = tf.cast(true_total + pred_total > 0, tf.float64)
            value = tf.math.divide_no_nan(tf.reduce_sum(per_class), tf.reduce_sum(defined))
        return tf.cast(value, tf.float32)

    def confusion_matrix(self):
        """The accumulated (K, K) int64 NumPy matrix, rows = true class, columns = predicted."""
        return np.asarray(keras.ops.convert_to_numpy(self.matrix), dtype=np.int64)

    def report(self, class_names=None):
        """`scores_from_confusion` of the accumulated matrix plus confusion_matrix (nested list of ints)
        and class_names (given, or "0", "1", ...; K names, so 2 for binary). NaN marks undefined scores."""
        cm = self.confusion_matrix()
        if class_names is None:
            class_names = [str(c) for c in range(self.size)]
        elif len(class_names) != self.size:
            raise UserError(f"class_names must have {self.size} entries (one per row of the confusion matrix), "
                            f"got {len(class_names)}: {list(class_names)}")
        return {**scores_from_confusion(cm), "confusion_matrix": cm.tolist(), "class_names": list(class_names)}

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "name": self.name,
                "output": self.output}
