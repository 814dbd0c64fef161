"""Procedurally generated scenes with exactly known masks, for tests and benchmarks.

Each scene is a noisy background (class 0) with up to three shapes drawn in turn,
later ones on top: discs (class 1), rectangles (class 2) and triangles (class 3),
each in a random colour. Example `i` of seed `s` is always the same picture, so any
size and count can be made on the fly with no files.
"""

from __future__ import annotations

import tensorflow as tf

from segkit.data.common import AUTOTUNE, DatasetInfo

CLASSES = ("background", "disc", "rectangle", "triangle")
COLORS = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200))
SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def make_scene(index, height: int, width: int, seed: int):
    """One (image float32 (H, W, 3), mask int32 (H, W)) scene for `index`."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
    seeds = tf.random.experimental.stateless_split(base, num=16)
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) / height, tf.range(width, dtype=tf.float32) / width,
                         indexing="ij")  # (H, W) each, in [0, 1)
    background = tf.random.stateless_uniform([3], seeds[0], 0.0, 0.6)
    image = tf.ones([height, width, 3]) * background
    mask = tf.zeros([height, width], tf.int32)
    for k in range(3):
        params = tf.random.stateless_uniform([6], seeds[1 + k], 0.0, 1.0)
        kind = tf.random.stateless_uniform([], seeds[4 + k], 0, 4, dtype=tf.int32)  # 0 = no shape
        color = tf.random.stateless_uniform([3], seeds[7 + k], 0.3, 1.0)
        cy, cx, size = params[0], params[1], 0.1 + 0.25 * params[2]
        disc = (ys - cy) ** 2 + (xs - cx) ** 2 < size ** 2
        rect = (tf.abs(ys - cy) < size * (0.5 + params[3])) & (tf.abs(xs - cx) < size * (0.5 + params[4]))
        # Triangle with apex above the centre: inside when below the two edges and above the base.
        dy = ys - (cy - size)
        tri = (dy > 0) & (dy < 2 * size) & (tf.abs(xs - cx) < dy * 0.6)
        inside = tf.stack([tf.zeros_like(disc), disc, rect, tri])[kind]
        mask = tf.where(inside, kind, mask)
        image = tf.where(inside[..., None], color, image)
    noise = tf.random.stateless_normal([height, width, 3], seeds[15], stddev=0.05)
    return tf.clip_by_value(image + noise, 0.0, 1.0), mask


def load(data_dir=None, split: str = "train", count: int = 64, image_size=(128, 128), seed: int = 0):
    """`count` scenes of `image_size`; `data_dir` is unused (accepted so every loader takes it)."""
    height, width = image_size
    offset = SPLIT_OFFSET.get(split, 3_000_000)
    ds = tf.data.Dataset.range(offset, offset + count)
    ds = ds.map(lambda i: make_scene(i, height, width, seed), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds, DatasetInfo("shapes", CLASSES, COLORS, split=split)
