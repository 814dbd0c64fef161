"""segkit.inference.predictor's MediaPipe-style input resizing: hand-worked values, and the separable integer form
equal bit for bit to the 2-D fixed-point formula it replaced (the one measured against MediaPipe 1.2.3)."""

import numpy as np
import pytest

from segkit.inference.predictor import resize_image_like_mediapipe


def two_d_reference(pixels: np.ndarray, size) -> np.ndarray:
    """OpenCV's fixed-point bilinear warp written out in 2-D: source coordinates dst * in / out rounded to
    1/32, the four corner weights rounded to 1/32768, the weighted sum rounded half up, edges repeated."""
    h, w = size

    def axis(n_out, n_in):
        q = np.round(np.arange(n_out) * (n_in / n_out) * 32).astype(np.int64)
        i0, fraction = q >> 5, q & 31
        return np.minimum(i0, n_in - 1), np.minimum(i0 + 1, n_in - 1), fraction

    y0, y1, fy = axis(h, pixels.shape[0])
    x0, x1, fx = axis(w, pixels.shape[1])
    wy = np.stack([32 - fy, fy], 1) / 32.0
    wx = np.stack([32 - fx, fx], 1) / 32.0
    w00 = np.round(wy[:, None, 0] * wx[None, :, 0] * 32768).astype(np.int64)[..., None]
    w01 = np.round(wy[:, None, 0] * wx[None, :, 1] * 32768).astype(np.int64)[..., None]
    w10 = np.round(wy[:, None, 1] * wx[None, :, 0] * 32768).astype(np.int64)[..., None]
    w11 = 32768 - w00 - w01 - w10
    image = pixels.astype(np.int64)
    top, bottom = image[y0], image[y1]
    total = top[:, x0] * w00 + top[:, x1] * w01 + bottom[:, x0] * w10 + bottom[:, x1] * w11
    return ((total + (1 << 14)) >> 15).astype(np.uint8)


def test_hand_worked_row():
    # 1x2 -> 1x3: source x = 0, 2/3, 4/3 -> 0, 21/32, 1 + 11/32 (edge repeated): 0, 2100 / 32 = 65.6 -> 66, 100.
    pixels = np.array([[[0, 0, 0], [100, 100, 100]]], np.uint8)
    np.testing.assert_array_equal(resize_image_like_mediapipe(pixels, (1, 3))[0, :, 0], [0, 66, 100])
    # Rounded half up: 1 and 2 meeting halfway (16/32) give 1.5 -> 2.
    pixels = np.array([[[1, 1, 1], [2, 2, 2]]], np.uint8)
    np.testing.assert_array_equal(resize_image_like_mediapipe(pixels, (1, 4))[0, :, 0], [1, 2, 2, 2])


@pytest.mark.parametrize("source", [(180, 240), (720, 960), (360, 480), (50, 70), (361, 479), (37, 1000),
                                    (1000, 37), (1, 1), (1080, 1920)])
def test_separable_form_equals_the_two_d_formula(source):
    rng = np.random.default_rng(sum(source))
    pixels = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    pixels[: source[0] // 2, : source[1] // 2] = 255  # saturated corners: the largest sums
    for size in [(360, 480), (192, 256), (64, 96), (384, 480), (3, 2)]:
        resized = resize_image_like_mediapipe(pixels, size)
        assert resized.dtype == np.uint8 and resized.shape == (*size, 3)
        np.testing.assert_array_equal(resized, two_d_reference(pixels, size), err_msg=f"{source} -> {size}")


def test_same_size_is_the_image_itself():
    pixels = np.zeros((4, 6, 3), np.uint8)
    assert resize_image_like_mediapipe(pixels, (4, 6)) is pixels
