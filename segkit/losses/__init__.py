"""Segmentation losses: `get_loss(name, num_classes, ...)` and the LOSSES registry.

Every loss takes (y_true, y_pred) with y_true integer labels (N, H, W) or (N, H, W, 1) and y_pred LOGITS
(N, H, W, C), float32 or bfloat16 (cast to float32 first), and returns a float32 scalar. Pixels labelled
ignore_index, and labels outside the class range, contribute nothing. Multi-class losses need
num_classes >= 2 (C = num_classes softmax logits); binary losses ("bce", "bce_dice") need num_classes = 1
(C = 1 sigmoid logit, labels 0/1).

Example:
    loss = losses.get_loss("tversky_cce", num_classes=21, lam=0.75)
    model.compile(optimizer, loss=loss, metrics=[metrics.ConfusionMatrix(21), *losses.term_metrics(loss)])

Importing this package registers every loss class with Keras ("segkit>..."), which is all
`keras.saving.load_model` needs to reload a model compiled with one of them.
"""

import inspect

from segkit import catalog
from segkit.errors import UserError
from segkit.losses.class_weights import class_weights_from_counts
from segkit.losses.keras_losses import (BCE, CCE, BinaryDice, Dice, FocalTversky, LossTerm, OhemCCE, SegLoss, SumOfLosses,
                                 Tversky, check_num_classes, check_range, term_metrics)

__all__ = ["LOSSES", "get_loss", "term_metrics", "class_weights_from_counts", "SegLoss", "SumOfLosses",
           "LossTerm", "OhemCCE", "Tversky", "Dice", "FocalTversky", "CCE", "BCE", "BinaryDice"]


def build_cce(num_classes, ignore_index=255, class_weights=None):
    """Categorical cross-entropy, mean over valid pixels (class weights weight pixels)."""
    return CCE(num_classes, ignore_index=ignore_index, class_weights=class_weights)


def build_ohem_cce(num_classes, ignore_index=255, class_weights=None, threshold=0.7, min_kept=1 / 16):
    """Cross-entropy over the hard pixels: true-class probability <= threshold, at least min_kept of them."""
    return OhemCCE(num_classes, threshold=threshold, min_kept=min_kept, ignore_index=ignore_index,
                   class_weights=class_weights)


def build_dice(num_classes, ignore_index=255, class_weights=None, smooth=1e-5):
    """Soft Dice loss, 1 - mean_c TI_c with alpha = beta = 0.5 (Milletari et al. 2016)."""
    return Dice(num_classes, smooth=smooth, ignore_index=ignore_index, class_weights=class_weights)


def build_tversky(num_classes, ignore_index=255, class_weights=None, alpha=0.3, beta=0.7, smooth=1e-5):
    """Tversky loss, 1 - mean_c TI_c (Salehi et al. 2017); beta > alpha weighs missed pixels more."""
    return Tversky(num_classes, alpha=alpha, beta=beta, smooth=smooth, ignore_index=ignore_index,
                   class_weights=class_weights)


def build_focal_tversky(num_classes, ignore_index=255, class_weights=None, alpha=0.3, beta=0.7, gamma=0.75,
                        smooth=1e-5):
    """Focal Tversky loss, mean_c (1 - TI_c)^gamma (Abraham & Khan 2019)."""
    return FocalTversky(num_classes, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth,
                        ignore_index=ignore_index, class_weights=class_weights)


def build_tversky_cce(num_classes, ignore_index=255, class_weights=None, lam=0.75, alpha=0.3, beta=0.7,
                      smooth=1e-5):
    """lam * tversky + (1 - lam) * cce, lam in [0, 1] (default 0.75); logs "tversky" and "cce"."""
    lam = check_range("lam", lam, 0.0, 1.0)
    tversky = build_tversky(num_classes, ignore_index, class_weights, alpha=alpha, beta=beta, smooth=smooth)
    return lam * tversky + (1.0 - lam) * build_cce(num_classes, ignore_index, class_weights)


def build_dice_cce(num_classes, ignore_index=255, class_weights=None, lam=0.5, smooth=1e-5):
    """lam * dice + (1 - lam) * cce, lam in [0, 1] (default 0.5: equal weights); logs "dice" and "cce"."""
    lam = check_range("lam", lam, 0.0, 1.0)
    dice = build_dice(num_classes, ignore_index, class_weights, smooth=smooth)
    return lam * dice + (1.0 - lam) * build_cce(num_classes, ignore_index, class_weights)


def build_bce(num_classes=1, ignore_index=255, class_weights=None):
    """Binary cross-entropy on one sigmoid logit; class_weights = (w_background, w_foreground)."""
    check_num_classes(num_classes, binary=True)
    return BCE(ignore_index=ignore_index, class_weights=class_weights)


def build_bce_dice(num_classes=1, ignore_index=255, class_weights=None, smooth=1e-5):
    """bce + dice of the foreground probability, weights 1 and 1 (the sum, as in segmentation_models'
    BinaryCELoss() + DiceLoss()); class_weights (w_background, w_foreground) apply to the bce term only.
    Logs "bce" and "dice"."""
    check_num_classes(num_classes, binary=True)
    return BCE(ignore_index=ignore_index, class_weights=class_weights) + BinaryDice(
        smooth=smooth, ignore_index=ignore_index)


# name -> builder: the names are segkit.catalog.LOSSES (what --loss offers), each built by build_<name> above.
LOSSES = {name: globals()[f"build_{name}"] for name in catalog.LOSSES}

_COMMON = ("num_classes", "ignore_index", "class_weights")


def get_loss(name, num_classes, ignore_index=255, class_weights=None, **params):
    """Builds the loss `name` from LOSSES.

    Args:
        name: a key of LOSSES.
        num_classes: number of classes; 1 for the binary losses "bce" and "bce_dice".
        ignore_index: label whose pixels contribute nothing (None: no such label).
        class_weights: None, or per-class weights >= 0 (num_classes of them; 2 = background, foreground
            for binary losses), e.g. from `class_weights_from_counts`. Region losses take the weighted mean
            over classes, cross-entropies the weighted mean over pixels.
        **params: the loss's own parameters, e.g. alpha, beta, smooth (tversky), gamma (focal_tversky),
            lam (tversky_cce, dice_cce). An unknown one raises UserError.

    Example: get_loss("tversky", 3, alpha=0.5, beta=0.5)
    """
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    builder = LOSSES[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in _COMMON]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UserError(f"unknown parameter(s) {unknown} for loss {name!r}; it accepts "
                        f"{accepted or 'no parameters'} besides {list(_COMMON)}")
    return builder(num_classes, ignore_index=ignore_index, class_weights=class_weights, **params)
