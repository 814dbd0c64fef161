"""ConfusionMatrix and scores_from_confusion: hand-computed matrices and scores, streaming, Keras fit, reload."""

import math

import keras
import numpy as np
import pytest

from segkit import losses
from segkit import metrics
from segkit.errors import UserError

nan = math.nan

# 2 x 3 masks, 4 classes; class 3 is in neither labels nor predictions, pixel (1, 1) is ignored.
Y_TRUE = np.array([[[0, 0, 1],
                    [2, 255, 1]]])
Y_PRED = np.array([[[0, 1, 1],
                    [2, 0, 2]]])
# Valid pixels (true -> pred): 0->0, 0->1, 1->1, 2->2, 1->2.
CM = [[1, 1, 0, 0],
      [0, 1, 1, 0],
      [0, 0, 1, 0],
      [0, 0, 0, 0]]
# TP = (1, 1, 1, 0), row sums (true) = (2, 2, 1, 0), column sums (predicted) = (1, 2, 2, 0)
IOU = [1 / (2 + 1 - 1), 1 / (2 + 2 - 1), 1 / (1 + 2 - 1), nan]  # 1/2, 1/3, 1/2, undefined
DICE = [2 / 3, 2 / 4, 2 / 3, nan]
PRECISION = [1 / 1, 1 / 2, 1 / 2, nan]
RECALL = [1 / 2, 1 / 2, 1 / 1, nan]
SHARE = [2 / 5, 2 / 5, 1 / 5, 0]
MIOU = (1 / 2 + 1 / 3 + 1 / 2) / 3  # = 4/9, class 3 left out of the mean
MEAN_DICE = (2 / 3 + 1 / 2 + 2 / 3) / 3  # = 11/18
ACCURACY = 3 / 5


def logits_for(labels, num_classes, scale=5.0):
    return (scale * np.eye(num_classes)[labels]).astype(np.float32)


def assert_list(got, expected):
    assert got == pytest.approx(expected, nan_ok=True)


def test_hand_computed_confusion_matrix_and_report():
    metric = metrics.ConfusionMatrix(4)
    metric.update_state(Y_TRUE, logits_for(Y_PRED, 4))
    np.testing.assert_array_equal(metric.confusion_matrix(), CM)
    assert metric.confusion_matrix().dtype == np.int64
    report = metric.report(class_names=["sky", "road", "car", "boat"])
    assert report["miou"] == pytest.approx(4 / 9) == pytest.approx(MIOU)
    assert report["mean_dice"] == pytest.approx(11 / 18) == pytest.approx(MEAN_DICE)
    assert report["pixel_accuracy"] == pytest.approx(ACCURACY)
    assert_list(report["per_class_iou"], IOU)
    assert_list(report["per_class_dice"], DICE)
    assert_list(report["per_class_precision"], PRECISION)
    assert_list(report["per_class_recall"], RECALL)
    assert_list(report["pixel_share"], SHARE)
    assert report["confusion_matrix"] == CM
    assert report["class_names"] == ["sky", "road", "car", "boat"]
    assert float(metric.result()) == pytest.approx(4 / 9)


@pytest.mark.parametrize("output, expected", [("miou", MIOU), ("mean_dice", MEAN_DICE), ("pixel_accuracy", ACCURACY)])
def test_result_outputs(output, expected):
    metric = metrics.ConfusionMatrix(4, output=output)
    assert metric.name == output
    metric.update_state(Y_TRUE[..., None], logits_for(Y_PRED, 4))  # labels (N, H, W, 1) work too
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)


def test_scores_from_confusion_pure_numpy():
    scores = metrics.scores_from_confusion(np.array(CM))
    assert scores["miou"] == pytest.approx(MIOU)
    assert_list(scores["per_class_precision"], PRECISION)
    # Class 0 labelled but never predicted: IoU 0 (counted in the mean), precision undefined, recall 0.
    scores = metrics.scores_from_confusion([[0, 2], [0, 2]])
    assert_list(scores["per_class_iou"], [0.0, 1 / 2])
    assert scores["miou"] == pytest.approx(1 / 4)
    assert_list(scores["per_class_precision"], [nan, 1 / 2])
    assert_list(scores["per_class_recall"], [0.0, 1.0])
    empty = metrics.scores_from_confusion(np.zeros((3, 3)))
    assert math.isnan(empty["miou"]) and math.isnan(empty["pixel_accuracy"])
    with pytest.raises(UserError, match="square"):
        metrics.scores_from_confusion(np.zeros((2, 3)))


def test_ignored_and_out_of_range_labels_are_skipped():
    metric = metrics.ConfusionMatrix(4)
    y = Y_TRUE.copy()
    y[0, 0, 0] = 9  # outside [0, 4): skipped like 255
    y[0, 0, 1] = -1
    metric.update_state(y, logits_for(Y_PRED, 4))
    expected = np.array(CM)
    expected[0] = 0
    np.testing.assert_array_equal(metric.confusion_matrix(), expected)
    # ignore_index=0: class 0 pixels are skipped; the ignored 255 pixel is outside [0, 4) and skipped too.
    metric = metrics.ConfusionMatrix(4, ignore_index=0)
    metric.update_state(Y_TRUE, logits_for(Y_PRED, 4))
    expected = np.array(CM)
    expected[0] = 0
    np.testing.assert_array_equal(metric.confusion_matrix(), expected)


def test_streaming_uses_one_matrix_not_a_mean_of_batches():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (2, 4, 4))
    y[0, :2] = 255
    pred = rng.integers(0, 3, (2, 4, 4))
    pred[1] = y[1]  # the second image is perfect: its own mIoU is 1
    streamed = metrics.ConfusionMatrix(3)
    streamed.update_state(y[:1], logits_for(pred[:1], 3))
    streamed.update_state(y[1:], logits_for(pred[1:], 3))
    whole = metrics.ConfusionMatrix(3)
    whole.update_state(y, logits_for(pred, 3))
    np.testing.assert_array_equal(streamed.confusion_matrix(), whole.confusion_matrix())
    assert float(streamed.result()) == pytest.approx(float(whole.result()))
    per_batch = [metrics.scores_from_confusion(_matrix(y[i:i + 1], pred[i:i + 1], 3))["miou"] for i in range(2)]
    assert float(streamed.result()) != pytest.approx(np.mean(per_batch))
    streamed.reset_state()
    assert streamed.confusion_matrix().sum() == 0 and float(streamed.result()) == 0.0


def _matrix(y, pred, k):
    ok = (y >= 0) & (y < k)
    return np.bincount(y[ok] * k + pred[ok], minlength=k * k).reshape(k, k)


def test_binary_counts_background_and_foreground():
    # One sigmoid logit: foreground when logit > 0 (a logit of exactly 0 is background).
    y = np.array([[[1, 1, 0], [0, 255, 1]]])
    logits = np.array([[[2.0, -1.0, 0.0], [3.0, 5.0, 0.5]]], np.float32)[..., None]
    # true 1 -> pred 1, 1 -> 0, 0 -> 0, 0 -> 1, (ignored), 1 -> 1
    metric = metrics.ConfusionMatrix(1)
    metric.update_state(y, logits)
    np.testing.assert_array_equal(metric.confusion_matrix(), [[1, 1], [1, 2]])
    report = metric.report()
    assert_list(report["per_class_iou"], [1 / 3, 2 / 4])
    assert report["miou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert report["class_names"] == ["0", "1"]


def test_update_labels_matches_update_state():
    from_labels = metrics.ConfusionMatrix(4)
    from_labels.update_labels(Y_TRUE, Y_PRED)
    np.testing.assert_array_equal(from_labels.confusion_matrix(), CM)
    with pytest.raises(Exception, match="predicted labels must be < 4"):
        from_labels.update_labels(Y_TRUE, Y_PRED + 3)


def test_counts_stay_exact_beyond_float32_precision():
    metric = metrics.ConfusionMatrix(2)
    metric.matrix.assign(np.array([[2**24, 0], [0, 2**40]], np.int64))
    metric.update_labels(np.array([[0, 1]]), np.array([[0, 1]]))
    np.testing.assert_array_equal(metric.confusion_matrix(), [[2**24 + 1, 0], [0, 2**40 + 1]])


def test_bad_input_raises_user_error():
    with pytest.raises(UserError, match="num_classes must be an int >= 1"):
        metrics.ConfusionMatrix(0)
    with pytest.raises(UserError, match=r"unknown output 'iou'; choose from \['miou'"):
        metrics.ConfusionMatrix(3, output="iou")
    metric = metrics.ConfusionMatrix(4)
    with pytest.raises(UserError, match="y_pred has 3 channels"):
        metric.update_state(Y_TRUE, logits_for(Y_PRED, 3))
    with pytest.raises(UserError, match="sample_weight"):
        metric.update_state(Y_TRUE, logits_for(Y_PRED, 4), sample_weight=np.ones(1))
    with pytest.raises(UserError, match="class_names must have 4 entries"):
        metric.report(class_names=["a", "b"])


@pytest.mark.parametrize("jit_compile", [False, True])  # "auto" means XLA on GPU machines
def test_fit_logs_metrics_and_terms_then_reloads_without_custom_objects(tmp_path, jit_compile):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, (4, 8, 8)).astype(np.int32)
    y[0, 0] = 255
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    loss = losses.get_loss("tversky_cce", 3)
    model.compile(optimizer="sgd", loss=loss, jit_compile=jit_compile,
                  metrics=[metrics.ConfusionMatrix(3), metrics.ConfusionMatrix(3, output="mean_dice"),
                           *losses.term_metrics(loss)])
    history = model.fit(x, y, batch_size=2, epochs=2, validation_data=(x, y), verbose=0).history
    assert {"loss", "miou", "mean_dice", "tversky", "cce"} <= set(history)
    assert {"val_loss", "val_miou", "val_mean_dice", "val_tversky", "val_cce"} <= set(history)
    # Validation runs once per epoch on the fixed weights after training: val_miou is the mIoU of
    # the final predictions, from one confusion matrix over all validation batches (reset each epoch).
    expected = metrics.ConfusionMatrix(3)
    expected.update_state(y, model.predict(x, verbose=0))
    assert history["val_miou"][-1] == pytest.approx(float(expected.result()), abs=1e-6)
    assert history["val_loss"][-1] == pytest.approx(
        0.75 * history["val_tversky"][-1] + 0.25 * history["val_cce"][-1], abs=1e-5)

    before = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    after = reloaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert after == pytest.approx(before, abs=1e-6)
    assert set(after) == {"loss", "miou", "mean_dice", "tversky", "cce"}


def test_metric_config_round_trip():
    metric = metrics.ConfusionMatrix(5, ignore_index=0, name="val_dice_score", output="mean_dice")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is metrics.ConfusionMatrix
    assert restored.get_config() == {"num_classes": 5, "ignore_index": 0, "name": "val_dice_score",
                                     "output": "mean_dice"}
