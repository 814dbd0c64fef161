"""Segmentation metrics: one streaming confusion matrix and the scores computed from it.

    miou = metrics.ConfusionMatrix(num_classes)            # result() = mean IoU, logged as "miou"
    model.compile(..., metrics=[miou])
    report = metric.report(class_names)                     # after update_state over a dataset

Importing this package registers ConfusionMatrix with Keras ("segkit>ConfusionMatrix"), so a model compiled
with it reloads with plain `keras.saving.load_model`.
"""

from segkit.metrics.confusion_matrix import OUTPUTS, ConfusionMatrix, scores_from_confusion

__all__ = ["ConfusionMatrix", "scores_from_confusion", "OUTPUTS"]
