"""Thin `keras.losses.Loss` wrappers around `losses.functional`, composable by arithmetic.

Every class is registered under package "segkit" and has a complete get_config, so a model compiled with
it saves with `model.save("m.keras")` and reloads with plain `keras.saving.load_model` once `losses` is
imported. Call convention (Keras): loss(y_true, y_pred) with y_true labels (N, H, W) or (N, H, W, 1) and
y_pred logits (N, H, W, C); the result is a float32 scalar (bfloat16 logits are cast to float32 first).

Composition: `0.75 * Tversky(5) + 0.25 * CCE(5)` is a `SumOfLosses` whose value is the weighted sum of
its terms; `term_metrics(loss)` gives one Keras metric per term so that each term is logged.
"""

import math
import numbers

import keras
import numpy as np

from segkit.errors import UserError
from segkit.losses import functional as F

register = keras.saving.register_keras_serializable(package="segkit")


# ---------------------------------------------------------------------------------------------- checks


def check_num_classes(num_classes, binary):
    """num_classes must be 1 for binary losses (one sigmoid channel) and >= 2 for multi-class ones."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise UserError(f"num_classes must be an int, got {num_classes!r}")
    num_classes = int(num_classes)
    if binary and num_classes != 1:
        raise UserError(f"binary losses ('bce', 'bce_dice') need num_classes=1 (one sigmoid logit channel), "
                        f"got num_classes={num_classes}; for {num_classes} classes use a multi-class loss")
    if not binary and num_classes < 2:
        raise UserError(f"multi-class losses need num_classes >= 2 (softmax logits), got num_classes={num_classes}"
                        f"; for a binary task with num_classes=1 use 'bce' or 'bce_dice'")
    return num_classes


def check_ignore_index(ignore_index):
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise UserError(f"ignore_index must be an int or None, got {ignore_index!r}")
    return int(ignore_index)


def check_range(name, value, low, high=math.inf, low_open=False):
    """value must be a real number in [low, high] ((low, high] if low_open); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}{']' if math.isfinite(high) else ')'}"
        raise UserError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_class_weights(class_weights, length, one_per="class"):
    """None, or `length` finite weights >= 0, not all 0; returned as a list of floats (JSON-serializable)."""
    if class_weights is None:
        return None
    try:
        weights = np.asarray(class_weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"class_weights must be a list of {length} numbers, got {class_weights!r}") from None
    if weights.shape != (length,):
        raise UserError(f"class_weights must have {length} entries (one per {one_per}), "
                        f"got shape {weights.shape}: {class_weights!r}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
        raise UserError(f"class_weights must be finite and >= 0 with at least one > 0, got {weights.tolist()}")
    return weights.tolist()


def _is_weight(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------------ base


class SegLoss(keras.losses.Loss):
    """Base class: a loss returning a scalar, composable as `a * loss1 + b * loss2` (a SumOfLosses)."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise UserError(f"loss {self.name!r} does not take sample_weight; weight classes with class_weights "
                            f"and drop pixels with ignore_index")
        return super().__call__(y_true, y_pred)

    def __add__(self, other):
        if not isinstance(other, keras.losses.Loss):
            return NotImplemented
        a, b = _as_sum(self), _as_sum(other)
        return SumOfLosses(a.terms + b.terms, a.term_weights + b.term_weights)

    def __radd__(self, other):
        if not isinstance(other, keras.losses.Loss):
            return NotImplemented
        return _as_sum(other) + self

    def __mul__(self, weight):
        if not _is_weight(weight):
            return NotImplemented
        total = _as_sum(self)
        return SumOfLosses(total.terms, [float(weight) * w for w in total.term_weights])

    __rmul__ = __mul__


def _as_sum(loss):
    return loss if isinstance(loss, SumOfLosses) else SumOfLosses([loss], [1.0])


# ---------------------------------------------------------------------------------------- multi-class


@register
class Tversky(SegLoss):
    """Tversky loss, 1 - mean_c TI_c (Salehi et al. 2017); see `losses.functional.tversky_loss`.

    Args: num_classes (>= 2), alpha (weight of FP, >= 0), beta (weight of FN, >= 0), smooth (> 0),
    ignore_index (int or None), class_weights (num_classes weights >= 0: weighted mean over classes).
    """

    def __init__(self, num_classes, alpha=0.3, beta=0.7, smooth=1e-5, ignore_index=255, class_weights=None,
                 name="tversky"):
        super().__init__(name=name)
        self.num_classes = check_num_classes(num_classes, binary=False)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.beta = check_range("beta", beta, 0.0)
        self.smooth = check_range("smooth", smooth, 0.0, low_open=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.class_weights = check_class_weights(class_weights, self.num_classes)

    def call(self, y_true, y_pred):
        return F.tversky_loss(y_true, y_pred, self.num_classes, self.alpha, self.beta, self.smooth,
                              self.ignore_index, self.class_weights)

    def get_config(self):
        return {"num_classes": self.num_classes, "alpha": self.alpha, "beta": self.beta, "smooth": self.smooth,
                "ignore_index": self.ignore_index, "class_weights": self.class_weights, "name": self.name}


@register
class Dice(SegLoss):
    """Soft Dice loss = Tversky with alpha = beta = 0.5 (Milletari et al. 2016); see `functional.dice_loss`."""

    def __init__(self, num_classes, smooth=1e-5, ignore_index=255, class_weights=None, name="dice"):
        super().__init__(name=name)
        self.num_classes = check_num_classes(num_classes, binary=False)
        self.smooth = check_range("smooth", smooth, 0.0, low_open=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.class_weights = check_class_weights(class_weights, self.num_classes)

    def call(self, y_true, y_pred):
        return F.dice_loss(y_true, y_pred, self.num_classes, self.smooth, self.ignore_index, self.class_weights)

    def get_config(self):
        return {"num_classes": self.num_classes, "smooth": self.smooth, "ignore_index": self.ignore_index,
                "class_weights": self.class_weights, "name": self.name}


@register
class FocalTversky(SegLoss):
    """Focal Tversky loss, mean_c (1 - TI_c)^gamma (Abraham & Khan 2019); see `functional.focal_tversky_loss`.

    gamma must be > 0 (the paper uses 0.75); alpha, beta, smooth as in Tversky.
    """

    def __init__(self, num_classes, alpha=0.3, beta=0.7, gamma=0.75, smooth=1e-5, ignore_index=255,
                 class_weights=None, name="focal_tversky"):
        super().__init__(name=name)
        self.num_classes = check_num_classes(num_classes, binary=False)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.beta = check_range("beta", beta, 0.0)
        self.gamma = check_range("gamma", gamma, 0.0, low_open=True)
        self.smooth = check_range("smooth", smooth, 0.0, low_open=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.class_weights = check_class_weights(class_weights, self.num_classes)

    def call(self, y_true, y_pred):
        return F.focal_tversky_loss(y_true, y_pred, self.num_classes, self.alpha, self.beta, self.gamma,
                                    self.smooth, self.ignore_index, self.class_weights)

    def get_config(self):
        return {"num_classes": self.num_classes, "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "smooth": self.smooth, "ignore_index": self.ignore_index, "class_weights": self.class_weights,
                "name": self.name}


@register
class CCE(SegLoss):
    """Categorical cross-entropy from logits over valid pixels, class weights weight the pixels;
    see `functional.cce_loss`."""

    def __init__(self, num_classes, ignore_index=255, class_weights=None, name="cce"):
        super().__init__(name=name)
        self.num_classes = check_num_classes(num_classes, binary=False)
        self.ignore_index = check_ignore_index(ignore_index)
        self.class_weights = check_class_weights(class_weights, self.num_classes)

    def call(self, y_true, y_pred):
        return F.cce_loss(y_true, y_pred, self.num_classes, self.ignore_index, self.class_weights)

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "class_weights": self.class_weights, "name": self.name}


@register
class OhemCCE(SegLoss):
    """Cross-entropy over the hard pixels only (online hard example mining); see `functional.ohem_cce_loss`.

    threshold in (0, 1]: pixels whose true-class probability is above it are dropped; min_kept in (0, 1]:
    the share of valid pixels (the hardest) that always counts.
    """

    def __init__(self, num_classes, threshold=0.7, min_kept=1 / 16, ignore_index=255, class_weights=None,
                 name="ohem_cce"):
        super().__init__(name=name)
        self.num_classes = check_num_classes(num_classes, binary=False)
        self.threshold = check_range("threshold", threshold, 0.0, 1.0, low_open=True)
        self.min_kept = check_range("min_kept", min_kept, 0.0, 1.0, low_open=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.class_weights = check_class_weights(class_weights, self.num_classes)

    def call(self, y_true, y_pred):
        return F.ohem_cce_loss(y_true, y_pred, self.num_classes, self.threshold, self.min_kept, self.ignore_index,
                               self.class_weights)

    def get_config(self):
        return {"num_classes": self.num_classes, "threshold": self.threshold, "min_kept": self.min_kept,
                "ignore_index": self.ignore_index, "class_weights": self.class_weights, "name": self.name}


# --------------------------------------------------------------------------------------------- binary


@register
class BCE(SegLoss):
    """Binary cross-entropy from one sigmoid logit channel, labels {0, 1}; class_weights =
    (w_background, w_foreground) weight the pixels. See `functional.bce_loss`."""

    def __init__(self, ignore_index=255, class_weights=None, name="bce"):
        super().__init__(name=name)
        self.ignore_index = check_ignore_index(ignore_index)
        self.class_weights = check_class_weights(class_weights, 2, one_per="label: background, foreground")

    def call(self, y_true, y_pred):
        return F.bce_loss(y_true, y_pred, self.ignore_index, self.class_weights)

    def get_config(self):
        return {"ignore_index": self.ignore_index, "class_weights": self.class_weights, "name": self.name}


@register
class BinaryDice(SegLoss):
    """Soft Dice loss of the foreground probability sigmoid(logit); see `functional.binary_dice_loss`."""

    def __init__(self, smooth=1e-5, ignore_index=255, name="dice"):
        super().__init__(name=name)
        self.smooth = check_range("smooth", smooth, 0.0, low_open=True)
        self.ignore_index = check_ignore_index(ignore_index)

    def call(self, y_true, y_pred):
        return F.binary_dice_loss(y_true, y_pred, self.smooth, self.ignore_index)

    def get_config(self):
        return {"smooth": self.smooth, "ignore_index": self.ignore_index, "name": self.name}


# ---------------------------------------------------------------------------------------- composition


@register
class SumOfLosses(SegLoss):
    """Weighted sum of losses: value = sum_k weights[k] * losses[k](y_true, y_pred).

    Usually built by arithmetic: `0.75 * Tversky(5) + 0.25 * CCE(5)`. Sums flatten (adding two sums
    concatenates their terms) and a number times a sum scales every weight. Terms must be Keras losses that
    return a scalar. The name defaults to the term names joined by "_" (e.g. "tversky_cce").
    The config holds each term's serialized config and the weights.
    """

    def __init__(self, losses, weights, name=None):
        terms = [keras.saving.deserialize_keras_object(t) if isinstance(t, dict) else t for t in losses]
        for term in terms:
            if not isinstance(term, keras.losses.Loss):
                raise UserError(f"SumOfLosses terms must be keras.losses.Loss objects, got {term!r}")
        if not terms or len(terms) != len(weights):
            raise UserError(f"SumOfLosses needs one weight per loss and at least one loss, got {len(terms)} "
                            f"losses and {len(weights)} weights")
        for weight in weights:
            if not _is_weight(weight):
                raise UserError(f"loss weights must be numbers, got {weight!r}")
            check_range("loss weight", weight, 0.0)
        super().__init__(name=name or "_".join(term.name for term in terms))
        self.terms = terms
        self.term_weights = [float(w) for w in weights]

    def call(self, y_true, y_pred):
        total = 0.0
        for weight, term in zip(self.term_weights, self.terms):
            total += weight * term(y_true, y_pred)
        return total

    def get_config(self):
        return {"losses": [keras.saving.serialize_keras_object(t) for t in self.terms],
                "weights": list(self.term_weights), "name": self.name}


@register
class LossTerm(keras.metrics.Mean):
    """Metric logging the mean (over batches, like Keras' "loss") of one loss term, unweighted:
    for `0.75 * Tversky + 0.25 * CCE` the "tversky" metric shows the Tversky loss itself, not 0.75 times it."""

    def __init__(self, loss, name=None):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        super().__init__(name=name or loss.name)
        self.loss = loss

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self.loss(y_true, y_pred))

    def get_config(self):
        return {"loss": keras.saving.serialize_keras_object(self.loss), "name": self.name}


def term_metrics(loss):
    """One `LossTerm` metric per term of a SumOfLosses, named after the term ("tversky", "cce", ...;
    a repeated name gets a suffix "_2", "_3"). A single, non-sum loss gives [] (Keras logs it as "loss").

    Example: model.compile(loss=loss, metrics=[metrics.ConfusionMatrix(C), *losses.term_metrics(loss)])
    logs loss, miou, tversky, cce, val_loss, val_miou, val_tversky, val_cce.
    Each term is computed a second time for its metric; for these losses that costs little next to the model.
    """
    if not isinstance(loss, SumOfLosses):
        return []
    result, seen = [], {}
    for term in loss.terms:
        seen[term.name] = seen.get(term.name, 0) + 1
        name = term.name if seen[term.name] == 1 else f"{term.name}_{seen[term.name]}"
        result.append(LossTerm(term, name=name))
    return result
