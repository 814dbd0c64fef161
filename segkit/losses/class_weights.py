"""Class weights from pixel counts: median frequency balancing."""

import numpy as np

from segkit.errors import UserError


def class_weights_from_counts(pixel_counts, present_pixel_counts=None):
    """Median frequency balancing weights (Eigen & Fergus 2015, "Predicting depth, surface normals and
    semantic labels with a common multi-scale convolutional architecture"):

        w_c = median_c'(freq_c') / freq_c

    pixel_counts[c]: pixels labelled c in the training set (ignored pixels excluded).
    present_pixel_counts[c] (optional): total pixels of the images in which class c is present; then
        freq_c = pixel_counts[c] / present_pixel_counts[c], the paper's definition. Without it
        freq_c = pixel_counts[c] / sum(pixel_counts), the plain frequency (a class occurring in few images
        then gets a larger weight than in the paper).
    The median is taken over the classes with a non-zero count. Classes with zero count get weight 0: they
    cannot be learnt from this data, and a weight of 0 keeps them out of the weighted means of the losses.

    Returns a list of floats, one per class, for `get_loss(..., class_weights=...)`.
    Example: counts [10, 30, 60, 0] -> freq [0.1, 0.3, 0.6, 0], median 0.3 -> weights [3.0, 1.0, 0.5, 0.0].
    """
    counts = _as_counts("pixel_counts", pixel_counts)
    if not np.any(counts > 0):
        raise UserError(f"pixel_counts must contain at least one count > 0, got {counts.tolist()}")
    if present_pixel_counts is None:
        totals = np.full_like(counts, counts.sum())
    else:
        totals = _as_counts("present_pixel_counts", present_pixel_counts)
        if totals.shape != counts.shape:
            raise UserError(f"present_pixel_counts must have one entry per class ({counts.size}), "
                            f"got {totals.size}")
        if np.any(totals < counts):
            raise UserError(f"present_pixel_counts must be >= pixel_counts for every class, got "
                            f"{totals.tolist()} for counts {counts.tolist()}")
    present = counts > 0
    freq = np.zeros_like(counts)
    freq[present] = counts[present] / totals[present]
    weights = np.zeros_like(counts)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights.tolist()


def _as_counts(name, values):
    try:
        counts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a list of counts, got {values!r}") from None
    if counts.ndim != 1 or counts.size == 0:
        raise UserError(f"{name} must be a non-empty 1-D list of counts, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise UserError(f"{name} must be finite and >= 0, got {counts.tolist()}")
    return counts
