"""Losses: hand-computed values, a NumPy reference on random inputs, composition, serialization."""

import math
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from segkit import losses
from segkit.errors import UserError

MULTI = ["cce", "dice", "tversky", "focal_tversky", "tversky_cce", "dice_cce"]
BINARY = ["bce", "bce_dice"]
C = 4  # classes of the random multi-class examples


# ------------------------------------------------------------------------------- NumPy reference


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_valid(y, num_labels, ignore):
    return (y != ignore) & (y >= 0) & (y < num_labels)


def np_class_mean(values, w):
    w = np.ones_like(values) if w is None else np.asarray(w, np.float64)
    return (w * values).sum() / w.sum()


def np_tversky_terms(y, logits, alpha, beta, smooth, ignore):
    y = y.reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    ok = np_valid(y, logits.shape[-1], ignore)
    p = np_softmax(logits[ok])
    g = np.eye(logits.shape[-1])[y[ok]]
    tp, fp, fn = (p * g).sum(0), (p * (1 - g)).sum(0), ((1 - p) * g).sum(0)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def np_cce(y, logits, w=None, ignore=255):
    y = y.reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    ok = np_valid(y, logits.shape[-1], ignore)
    y, logits = y[ok], logits[ok]
    if y.size == 0:
        return 0.0
    nll = -np.log(np_softmax(logits)[np.arange(y.size), y])
    wy = np.ones(y.size) if w is None else np.asarray(w)[y]
    return (wy * nll).sum() / wy.sum()


def np_bce(y, logits, w=None, ignore=255):
    y, x = y.reshape(-1), logits.reshape(-1).astype(np.float64)
    ok = np_valid(y, 2, ignore)
    y, x = y[ok], x[ok]
    s = 1 / (1 + np.exp(-x))
    nll = -(y * np.log(s) + (1 - y) * np.log(1 - s))
    wy = np.ones(y.size) if w is None else np.asarray(w)[y]
    return (wy * nll).sum() / wy.sum()


def np_binary_dice(y, logits, smooth=1e-5, ignore=255):
    y, x = y.reshape(-1), logits.reshape(-1).astype(np.float64)
    ok = np_valid(y, 2, ignore)
    p, g = 1 / (1 + np.exp(-x[ok])), (y[ok] == 1).astype(np.float64)
    tp, fp, fn = (p * g).sum(), (p * (1 - g)).sum(), ((1 - p) * g).sum()
    return 1 - (tp + smooth) / (tp + 0.5 * fp + 0.5 * fn + smooth)


def np_loss(name, y, logits, w=None, lam=None):
    """Reference value of get_loss(name, ...) with default parameters (and lam if given)."""
    t = lambda a, b: np_tversky_terms(y, logits, a, b, 1e-5, 255)  # noqa: E731
    if name == "cce":
        return np_cce(y, logits, w)
    if name == "dice":
        return np_class_mean(t(0.5, 0.5), w)
    if name == "tversky":
        return np_class_mean(t(0.3, 0.7), w)
    if name == "focal_tversky":
        return np_class_mean(np.maximum(t(0.3, 0.7), 1e-7) ** 0.75, w)
    if name == "tversky_cce":
        lam = 0.75 if lam is None else lam
        return lam * np_class_mean(t(0.3, 0.7), w) + (1 - lam) * np_cce(y, logits, w)
    if name == "dice_cce":
        lam = 0.5 if lam is None else lam
        return lam * np_class_mean(t(0.5, 0.5), w) + (1 - lam) * np_cce(y, logits, w)
    if name == "bce":
        return np_bce(y, logits, w)
    if name == "bce_dice":
        return np_bce(y, logits, w) + np_binary_dice(y, logits)
    raise AssertionError(name)


def random_batch(rng, name, shape=(2, 5, 6), ignore_fraction=0.2):
    """Labels with ~20% ignored pixels (255) and random logits (N, H, W, C)."""
    channels, labels = (1, 2) if name in BINARY else (C, C)
    y = rng.integers(0, labels, shape)
    y[rng.random(shape) < ignore_fraction] = 255
    logits = (3 * rng.normal(size=(*shape, channels))).astype(np.float32)
    return y, logits


def value(loss, y, logits):
    return float(loss(y, logits))


# ------------------------------------------------------------------------------- reference values


@pytest.mark.parametrize("name", MULTI + BINARY)
def test_matches_numpy_reference_with_and_without_class_weights(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    num_classes = 1 if name in BINARY else C
    n_weights = 2 if name in BINARY else C
    # Label dtypes and shapes vary: uint8 (N, H, W), int64 (N, H, W, 1), float32 (N, H, W).
    for seed, cast in enumerate([np.uint8, lambda a: a[..., None].astype(np.int64), np.float32]):
        y, logits = random_batch(rng, name)
        weights = rng.uniform(0.2, 3.0, n_weights).tolist()
        for w in (None, weights):
            loss = losses.get_loss(name, num_classes, class_weights=w)
            got = value(loss, cast(y), logits)
            assert got == pytest.approx(np_loss(name, y, logits, w), rel=1e-5, abs=1e-6), (name, seed, w)


def test_hand_computed_dice_tversky_cce_on_1x2x2():
    # Labels [[0, 1], [1, 255]]; logits = log(p) so that softmax gives exactly these p = (p_0, p_1):
    #   (0,0) y=0 p=(3/4, 1/4)   (0,1) y=1 p=(1/2, 1/2)   (1,0) y=1 p=(1/4, 3/4)   (1,1) ignored
    y = np.array([[[0, 1], [1, 255]]])
    p = np.array([[[[0.75, 0.25], [0.5, 0.5]], [[0.25, 0.75], [0.9, 0.1]]]])
    logits = np.log(p).astype(np.float32)
    # class 0: TP = 3/4, FP = 1/2 + 1/4 = 3/4, FN = 1/4;  class 1: TP = 1/2 + 3/4 = 5/4, FP = 1/4, FN = 3/4
    # Dice:    TI_0 = (3/4) / (3/4 + 3/8 + 1/8) = 3/5,    TI_1 = (5/4) / (5/4 + 1/8 + 3/8) = 5/7
    # Tversky: TI_0 = (3/4) / (3/4 + 0.3*3/4 + 0.7*1/4) = 15/23,  TI_1 = (5/4) / (5/4 + 0.3/4 + 0.7*3/4) = 25/37
    dice = 1 - (3 / 5 + 5 / 7) / 2  # = 12/35
    tversky = 1 - (15 / 23 + 25 / 37) / 2
    focal = ((1 - 15 / 23) ** 0.75 + (1 - 25 / 37) ** 0.75) / 2
    cce = -(math.log(3 / 4) + math.log(1 / 2) + math.log(3 / 4)) / 3
    assert dice == pytest.approx(12 / 35)
    tol = dict(abs=2e-5)  # smooth = 1e-5 moves the values slightly
    assert value(losses.get_loss("dice", 2), y, logits) == pytest.approx(dice, **tol)
    assert value(losses.get_loss("tversky", 2), y, logits) == pytest.approx(tversky, **tol)
    assert value(losses.get_loss("focal_tversky", 2), y, logits) == pytest.approx(focal, **tol)
    assert value(losses.get_loss("cce", 2), y, logits) == pytest.approx(cce, abs=1e-6)
    # Class weights (1, 3): weighted mean over classes for Dice, over pixels for CE (pixel weights 1, 3, 3).
    w = [1.0, 3.0]
    assert value(losses.get_loss("dice", 2, class_weights=w), y, logits) == pytest.approx(
        (1 * (1 - 3 / 5) + 3 * (1 - 5 / 7)) / 4, **tol)
    assert value(losses.get_loss("cce", 2, class_weights=w), y, logits) == pytest.approx(
        -(1 * math.log(3 / 4) + 3 * math.log(1 / 2) + 3 * math.log(3 / 4)) / 7, abs=1e-6)


def test_hand_computed_binary():
    # Labels [[1, 0, 255]], logits [[0, log 3, 5]]: s = 1/2, 3/4, (ignored).
    y = np.array([[[1, 0, 255]]])
    logits = np.array([[[[0.0], [math.log(3)], [5.0]]]], np.float32)
    bce = -(math.log(1 / 2) + math.log(1 - 3 / 4)) / 2
    # foreground: TP = 1/2, FP = 3/4, FN = 1/2 -> Dice index (1/2) / (1/2 + 3/8 + 1/4) = 4/9
    assert value(losses.get_loss("bce", 1), y, logits) == pytest.approx(bce, abs=1e-6)
    assert value(losses.get_loss("bce_dice", 1), y, logits) == pytest.approx(bce + 1 - 4 / 9, abs=2e-5)


@pytest.mark.parametrize("name", MULTI + BINARY)
def test_perfect_logits_give_near_zero(name):
    rng = np.random.default_rng(1)
    y, _ = random_batch(rng, name, shape=(2, 6, 6))
    y[0, 0, : (2 if name in BINARY else C)] = np.arange(2 if name in BINARY else C)  # every class present
    if name in BINARY:
        logits = np.where(y == 1, 20.0, -20.0)[..., None].astype(np.float32)
    else:
        logits = (20.0 * np.eye(C)[np.where(y == 255, 0, y)]).astype(np.float32)
    assert 0 <= value(losses.get_loss(name, 1 if name in BINARY else C), y, logits) < 1e-3


# ------------------------------------------------------------------------------- ignored pixels, dtypes


@pytest.mark.parametrize("name", MULTI + BINARY)
def test_ignored_and_out_of_range_pixels_change_nothing(name):
    rng = np.random.default_rng(2)
    y, logits = random_batch(rng, name)
    num_classes = 1 if name in BINARY else C
    loss = losses.get_loss(name, num_classes, class_weights=[1.0, 2.0] if name in BINARY else [1, 2, 3, 4])
    before = value(loss, y, logits)
    other = logits.copy()
    other[y == 255] = 10 * rng.normal(size=other[y == 255].shape)
    assert value(loss, y, other) == pytest.approx(before, abs=1e-6)
    # A label outside [0, C) is skipped like ignore_index.
    y_out = y.copy()
    y_out[y == 255] = 7
    assert value(loss, y_out, logits) == pytest.approx(before, abs=1e-6)
    # ignore_index=None: 255 is still outside [0, C), so still skipped.
    assert value(losses.get_loss(name, num_classes, ignore_index=None), y, logits) == pytest.approx(
        value(losses.get_loss(name, num_classes), y, logits), abs=1e-6)


def test_ignore_index_inside_class_range():
    rng = np.random.default_rng(3)
    y, logits = random_batch(rng, "cce", ignore_fraction=0.0)
    y0 = y.copy()
    y0[y == 0] = 255
    for name in MULTI:
        assert value(losses.get_loss(name, C, ignore_index=0), y, logits) == pytest.approx(
            value(losses.get_loss(name, C), y0, logits), abs=1e-6)


@pytest.mark.parametrize("name", MULTI + BINARY)
def test_all_ignored_gives_zero_and_finite_gradient(name):
    y, logits = random_batch(np.random.default_rng(4), name)
    y[:] = 255
    loss = losses.get_loss(name, 1 if name in BINARY else C)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        out = loss(y, x)
    grad = tape.gradient(out, x)
    assert abs(float(out)) < 1e-5  # focal_tversky: (1e-7)^0.75 ~ 6e-6
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name", MULTI + BINARY)
def test_bfloat16_logits_are_cast_to_float32(name):
    y, logits = random_batch(np.random.default_rng(5), name)
    bf16 = tf.constant(logits, tf.bfloat16)
    loss = losses.get_loss(name, 1 if name in BINARY else C)
    out = loss(y, bf16)
    assert out.dtype == tf.float32
    rounded = tf.cast(bf16, tf.float32).numpy()
    assert float(out) == pytest.approx(value(loss, y, rounded), abs=1e-6)
    assert float(out) == pytest.approx(np_loss(name, y, rounded), rel=1e-5, abs=1e-6)
    # The pure functions cast too (Keras' Loss.__call__ already casts to float32 before them).
    if name == "tversky":
        assert float(losses.functional.tversky_loss(y, bf16, C)) == pytest.approx(float(out), abs=1e-6)


def test_focal_tversky_gradient_is_finite_at_a_saturated_perfect_prediction():
    # 100 * one_hot saturates softmax to exactly 0/1 in float32, so 1 - TI_c = 0 where (1 - TI)^0.75 has an
    # infinite derivative; the 1e-7 floor keeps the gradient finite.
    y = np.array([[[0, 1], [2, 255]]])
    x = tf.Variable(100.0 * np.eye(3, dtype=np.float32)[np.where(y == 255, 0, y)])
    with tf.GradientTape() as tape:
        out = losses.get_loss("focal_tversky", 3)(y, x)
    assert float(out) < 1e-5
    assert np.all(np.isfinite(tape.gradient(out, x).numpy()))


# ------------------------------------------------------------------------------- composition and terms


def test_combined_losses_equal_weighted_terms():
    rng = np.random.default_rng(6)
    y, logits = random_batch(rng, "cce")
    tversky, dice, cce = (value(losses.get_loss(n, C), y, logits) for n in ("tversky", "dice", "cce"))
    for lam in (0.75, 0.3):
        assert value(losses.get_loss("tversky_cce", C, lam=lam), y, logits) == pytest.approx(
            lam * tversky + (1 - lam) * cce, abs=1e-6)
    assert value(losses.get_loss("dice_cce", C), y, logits) == pytest.approx(0.5 * dice + 0.5 * cce, abs=1e-6)
    yb, xb = random_batch(rng, "bce")
    assert value(losses.get_loss("bce_dice", 1), yb, xb) == pytest.approx(
        value(losses.get_loss("bce", 1), yb, xb) + value(losses.BinaryDice(), yb, xb), abs=1e-6)


def test_arithmetic_builds_a_weighted_sum():
    y, logits = random_batch(np.random.default_rng(7), "cce")
    a, b = losses.Tversky(C), losses.CCE(C)
    total = 0.3 * a + 0.7 * b
    assert isinstance(total, losses.SumOfLosses)
    assert total.name == "tversky_cce" and total.term_weights == [0.3, 0.7]
    assert value(total, y, logits) == pytest.approx(0.3 * value(a, y, logits) + 0.7 * value(b, y, logits),
                                                    abs=1e-6)
    nested = 2 * total + a * 0.5  # sums flatten, a number scales every weight
    assert nested.terms == [a, b, a] and nested.term_weights == pytest.approx([0.6, 1.4, 0.5])
    assert value(nested, y, logits) == pytest.approx(1.1 * value(a, y, logits) + 1.4 * value(b, y, logits),
                                                     abs=1e-5)
    with pytest.raises(TypeError):
        a * "2"
    with pytest.raises(UserError, match="loss weight"):
        -1 * a


def test_term_metrics_track_each_term():
    rng = np.random.default_rng(8)
    loss = losses.get_loss("tversky_cce", C)
    terms = losses.term_metrics(loss)
    assert [m.name for m in terms] == ["tversky", "cce"]
    batches = [random_batch(rng, "cce") for _ in range(2)]
    for y, logits in batches:
        for m in terms:
            m.update_state(y, logits)
    for m, name in zip(terms, ["tversky", "cce"]):
        expected = np.mean([np_loss(name, y, logits) for y, logits in batches])  # unweighted term, mean of batches
        assert float(m.result()) == pytest.approx(expected, rel=1e-5)
    assert losses.term_metrics(losses.get_loss("dice", C)) == []
    assert [m.name for m in losses.term_metrics(losses.Dice(C) + losses.Dice(C))] == ["dice", "dice_2"]
    assert [m.name for m in losses.term_metrics(losses.get_loss("bce_dice", 1))] == ["bce", "dice"]


# ------------------------------------------------------------------------------- serialization


def tiny_model(channels):
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(channels, 1)(inputs))


@pytest.mark.parametrize("name", MULTI + BINARY)
def test_compiled_model_reloads_without_custom_objects(name, tmp_path):
    binary = name in BINARY
    num_classes = 1 if binary else C
    weights = [1.0, 2.0] if binary else [1.0, 2.0, 0.5, 0.0]
    params = {"lam": 0.6} if name in ("tversky_cce", "dice_cce") else {}
    loss = losses.get_loss(name, num_classes, class_weights=weights, **params)
    model = tiny_model(num_classes)
    model.compile(optimizer="sgd", loss=loss, metrics=losses.term_metrics(loss))
    model.save(tmp_path / "m.keras")

    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    rng = np.random.default_rng(9)
    y, _ = random_batch(rng, name)
    x = rng.normal(size=(*y.shape, 3)).astype(np.float32)
    logits = model(x)
    assert value(reloaded.loss, y, reloaded(x)) == pytest.approx(value(loss, y, logits), abs=1e-6)


# ------------------------------------------------------------------------------- class weights


def test_median_frequency_weights_hand_computed():
    # freq = (0.1, 0.3, 0.6, 0), median over present classes 0.3 -> 0.3 / freq; absent class -> 0.
    assert losses.class_weights_from_counts([10, 30, 60, 0]) == pytest.approx([3.0, 1.0, 0.5, 0.0])
    # Even number of present classes: median of (0.1, 0.2, 0.3, 0.4) is 0.25.
    assert losses.class_weights_from_counts([10, 20, 30, 40]) == pytest.approx([2.5, 1.25, 0.25 / 0.3, 0.625])
    # Paper definition: freq_c = count_c / pixels of the images containing c = (0.1, 0.3, 0.3) -> median 0.3.
    assert losses.class_weights_from_counts([10, 30, 60], present_pixel_counts=[100, 100, 200]) == \
        pytest.approx([3.0, 1.0, 1.0])
    # The result is accepted by get_loss, zero weight included.
    losses.get_loss("dice", 4, class_weights=losses.class_weights_from_counts([10, 30, 60, 0]))
    with pytest.raises(UserError, match="at least one count"):
        losses.class_weights_from_counts([0, 0])
    with pytest.raises(UserError, match=">= 0"):
        losses.class_weights_from_counts([5, -1])


# ------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("call, match", [
    (lambda: losses.get_loss("dise", 3), r"unknown loss 'dise'; choose from \['bce', 'bce_dice', 'cce'"),
    (lambda: losses.get_loss("tversky", 3, alhpa=0.5), r"unknown parameter\(s\) \['alhpa'\].*'alpha', 'beta'"),
    (lambda: losses.get_loss("cce", 3, smooth=1.0), r"\['smooth'\] for loss 'cce'"),
    (lambda: losses.get_loss("tversky", 3, alpha=-0.1), r"alpha must be in \[0.0, inf\), got -0.1"),
    (lambda: losses.get_loss("focal_tversky", 3, gamma=0), r"gamma must be in \(0.0, inf\), got 0"),
    (lambda: losses.get_loss("tversky_cce", 3, lam=1.5), r"lam must be in \[0.0, 1.0\], got 1.5"),
    (lambda: losses.get_loss("dice", 3, class_weights=[1, 2]), r"3 entries .*got shape \(2,\)"),
    (lambda: losses.get_loss("dice", 3, class_weights=[1, -2, 1]), r">= 0 .*got \[1.0, -2.0, 1.0\]"),
    (lambda: losses.get_loss("bce", 1, class_weights=[1.0]), r"2 entries \(one per label: background"),
    (lambda: losses.get_loss("bce", 3), r"num_classes=1 .*got num_classes=3"),
    (lambda: losses.get_loss("dice", 1), r"num_classes >= 2.*got num_classes=1.*'bce'"),
    (lambda: losses.get_loss("cce", 3)(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 4), np.float32)),
     r"y_pred has 4 channels.*num_classes=3"),
    (lambda: losses.get_loss("cce", 3)(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 3), np.float32),
                                       sample_weight=np.ones(1)), "sample_weight"),
])
def test_bad_input_raises_user_error(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_auxiliary_head_loss_is_main_plus_weighted_aux():
    """--aux-weight: the training loss is loss(main logits) + w * loss(auxiliary logits), each the compiled loss
    computed on its own; validation scores the main logits alone; the head starts from the named layer."""
    import keras

    from segkit import losses, models
    from segkit.training.auxiliary import AuxiliaryHead, with_auxiliary_outputs

    keras.utils.set_random_seed(0)
    network = with_auxiliary_outputs(models.build_model("ddrnet", 5, variant="nano"), "fuse3_high", 5)
    model = AuxiliaryHead(network, weight=0.4)
    loss = losses.get_loss("cce", 5, ignore_index=255)
    model.compile(optimizer="sgd", loss=loss)
    rng = np.random.default_rng(0)
    x = rng.random((2, 64, 96, 3), dtype=np.float32)
    y = rng.integers(0, 5, (2, 64, 96)).astype("int32")
    y[0, :8] = 255
    main, aux = (np.asarray(t) for t in network(x, training=True))
    assert aux.shape == main.shape == (2, 64, 96, 5) and np.abs(main - aux).max() > 1e-3
    y_pred = model(x, training=True)
    assert isinstance(y_pred, tuple) and np.abs(np.asarray(y_pred[1]) - aux).max() < 1e-5
    got = float(model.compute_loss(x, y, y_pred, training=True))
    assert got == pytest.approx(float(loss(y, main)) + 0.4 * float(loss(y, aux)), rel=1e-5)
    inference = np.asarray(model(x))  # BatchNorm in inference mode: the network's first output, nothing added
    np.testing.assert_allclose(inference, np.asarray(network(x)[0]), atol=1e-6)
    assert float(model.compute_loss(x, y, inference, training=False)) == pytest.approx(float(loss(y, inference)),
                                                                                       rel=1e-5)
    assert model.main_model().count_params() == models.build_model("ddrnet", 5, variant="nano").count_params()
    assert len(model.weights) == len(network.weights)  # the head-less path tracks no second copy
    with pytest.raises(UserError, match="has no layer 'nowhere'"):
        with_auxiliary_outputs(models.build_model("ddrnet", 5, variant="nano"), "nowhere", 5)


def test_a_float32_teacher_runs_in_the_runs_mixed_precision():
    """distill.in_policy: every layer but the output computes in the run's policy, the weights are the same
    arrays, the logits stay float32 and close to the float32 model's; nothing to change gives the model back."""
    import keras

    from segkit import models
    from segkit.training.distill import in_policy

    keras.utils.set_random_seed(0)
    teacher = models.build_model("ddrnet", 5, variant="nano")
    mixed = in_policy(teacher, "mixed_bfloat16")
    assert in_policy(teacher, "float32") is teacher
    assert mixed.get_layer("stem_a_conv").dtype_policy.name == "mixed_bfloat16"
    assert mixed.get_layer("logits").dtype_policy.name == "float32"
    assert all(np.array_equal(a, b) for a, b in zip(mixed.get_weights(), teacher.get_weights()))
    x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    ours, theirs = np.asarray(mixed(x)), np.asarray(teacher(x))
    assert ours.dtype == np.float32 and np.abs(ours - theirs).max() <= 0.05 * np.abs(theirs).max()


def test_distillation_term_against_numpy():
    """T^2 KL(softmax(t/T) || softmax(s/T)) averaged over labelled pixels; label 255 pixels count for nothing."""
    from segkit.training.distill import distillation_term

    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    labels = rng.integers(0, 5, (2, 3, 4))
    labels[0, 0] = 255
    temperature = 2.0

    def log_softmax(x):
        x = x / temperature
        return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)

    kl = (np.exp(log_softmax(teacher)) * (log_softmax(teacher) - log_softmax(student))).sum(-1)
    expected = temperature ** 2 * kl[labels != 255].mean()
    got = float(distillation_term(student.astype("float32"), teacher.astype("float32"), labels, temperature))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(distillation_term(teacher, teacher, labels, temperature)) == pytest.approx(0.0, abs=1e-6)
