"""Augmentation and batching on top of the dataset contract.

`prepare(ds, training=True, ...)` turns a dataset of single `(image, mask)` examples
at their own size into batches a model can take:

- training: shuffle, random scale, pad (image 0, mask 255) and random crop to
  `image_size`, random horizontal flip, photometric jitter. The image is resized
  bilinearly and the mask with nearest neighbour, both with the same random numbers,
  so they stay aligned. Random numbers come from stateless ops seeded by
  `Dataset.random(seed)`, so two runs with the same seed see the same batches.
  `training_stream` is the endless version a training run reads: pass p is shuffled with a seed
  of (seed, p) and example i of it is augmented with the seed (seed, p * N + i), so batch k is the
  same whichever batch the stream starts at, and a resumed run sees exactly the batches of a run
  that was never stopped. With `paste=(class_ids, prob)` each batch then goes through `paste_classes`
  (copy-paste of chosen classes between the images of a batch), seeded by its place in the stream.
- evaluation: no randomness. With `image_size` the pair is resized (mask nearest);
  without it each pair is padded on the bottom/right to a multiple of 32 (mask 255),
  so the model sees every pixel at its own resolution and padding is ignored.
"""

from __future__ import annotations

import tensorflow as tf

from segkit.catalog import MULTIPLE
from segkit.data.common import AUTOTUNE, IGNORE


def resize_pair(image, mask, size):
    """Resize image bilinearly and mask with nearest neighbour to `size` (h, w)."""
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, tf.cast(mask, tf.int32)


def pad_pair(image, mask, height, width):
    """Pad on the bottom/right to at least (height, width): image with 0, mask with IGNORE."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ph, pw = tf.maximum(height - h, 0), tf.maximum(width - w, 0)
    image = tf.pad(image, [[0, ph], [0, pw], [0, 0]])
    mask = tf.pad(mask, [[0, ph], [0, pw]], constant_values=IGNORE)
    return image, mask


def pad_to_multiple(image, mask, multiple: int = MULTIPLE):
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    return pad_pair(image, mask, (h + multiple - 1) // multiple * multiple, (w + multiple - 1) // multiple * multiple)


def gaussian_blur(image, sigma):
    """`image` (H, W, 3) blurred by a separable 7-tap Gaussian of standard deviation `sigma` (a scalar tensor),
    edges padded by reflection."""
    taps = tf.range(-3.0, 4.0)
    kernel = tf.exp(-0.5 * tf.square(taps / tf.maximum(sigma, 1e-3)))
    kernel /= tf.reduce_sum(kernel)
    x = tf.pad(image[None], [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    x = tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(kernel, [7, 1, 1, 1]), [1, 1, 3, 1]), [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(kernel, [1, 7, 1, 1]), [1, 1, 3, 1]), [1, 1, 1, 1], "VALID")
    return x[0]


def strong_photometric(image, seed, blur_and_noise=True):
    """Photometric changes for frames of a street, a light or a camera not seen in training (CamVid's dusk
    sequence, a new town): gamma 0.67-1.5 (log-uniform), brightness +-0.2, contrast and saturation 0.7-1.3,
    hue +-0.03, then in 30% of images a Gaussian blur (sigma 0.3-1.5) and in 30% Gaussian noise (std up to
    0.04). `seed` is a shape-[2] int tensor; values stay in [0, 1]. Without `blur_and_noise` ("colour") the
    colour changes alone, with the same random numbers."""
    seeds = tf.random.experimental.stateless_split(seed, num=10)
    gamma = tf.exp(tf.random.stateless_uniform([], seeds[0], -0.405, 0.405))
    image = tf.pow(tf.clip_by_value(image, 0.0, 1.0), gamma)
    image = tf.image.stateless_random_brightness(image, 0.2, seeds[1])
    image = tf.image.stateless_random_contrast(image, 0.7, 1.3, seeds[2])
    image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seeds[3])
    image = tf.image.stateless_random_hue(image, 0.03, seeds[4])
    image = tf.clip_by_value(image, 0.0, 1.0)
    if not blur_and_noise:
        return image
    blur = tf.random.stateless_uniform([], seeds[5]) < 0.3
    sigma = tf.random.stateless_uniform([], seeds[6], 0.3, 1.5)
    image = tf.cond(blur, lambda: gaussian_blur(image, sigma), lambda: image)
    noisy = tf.random.stateless_uniform([], seeds[7]) < 0.3
    std = tf.random.stateless_uniform([], seeds[8], 0.0, 0.04)
    noise = tf.random.stateless_normal(tf.shape(image), seeds[9]) * std
    image = tf.cond(noisy, lambda: image + noise, lambda: image)
    return tf.clip_by_value(image, 0.0, 1.0)


def augment(image, mask, seed, image_size, scale_range=(0.5, 2.0), flip=True, jitter=True, strength="standard"):
    """Random scale + crop to `image_size`, flip and colour jitter; `seed` is a shape-[2] int tensor.

    `strength` "standard": brightness +-0.15, contrast and saturation 0.8-1.2; "strong": `strong_photometric`
    instead; "colour": its colour changes without the blur and noise (the geometry, and its random numbers,
    are the same for all three)."""
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    crop_h, crop_w = image_size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.random.stateless_uniform([], seeds[0], scale_range[0], scale_range[1])
    new_size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)  # a tiny image stays at least 1x1
    image, mask = resize_pair(image, mask, new_size)
    image, mask = pad_pair(image, mask, crop_h, crop_w)

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top = tf.random.stateless_uniform([], seeds[1], 0, h - crop_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, w - crop_w + 1, dtype=tf.int32)
    image = image[top:top + crop_h, left:left + crop_w]
    mask = mask[top:top + crop_h, left:left + crop_w]

    if flip:
        do_flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        image = tf.cond(do_flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(do_flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    if jitter and strength in ("strong", "colour"):
        image = strong_photometric(image, seeds[7], blur_and_noise=strength == "strong")
    elif jitter:
        image = tf.image.stateless_random_brightness(image, 0.15, seeds[4])
        image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seeds[5])
        image = tf.image.stateless_random_saturation(image, 0.8, 1.2, seeds[6])
        image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.ensure_shape(image, [crop_h, crop_w, 3])
    mask = tf.ensure_shape(mask, [crop_h, crop_w])
    return image, mask


def paste_classes(images, masks, class_ids, prob, seed):
    """Copy-paste within a batch: image i takes, with probability `prob`, every pixel of `class_ids` (with its
    label) from image i - 1 of the batch (the last image gives to the first), at the same place.

    Thin classes (poles, signs, fences) then appear in front of other streets and backgrounds than the few
    they were filmed against, and the network cannot lean on their usual surroundings. `images` (B, H, W, 3),
    `masks` (B, H, W) int32, `seed` a shape-[2] int tensor; a batch of one is returned unchanged."""
    donor_images, donor_masks = tf.roll(images, 1, axis=0), tf.roll(masks, 1, axis=0)
    chosen = tf.reduce_any(donor_masks[..., None] == tf.constant(class_ids, tf.int32), axis=-1)
    apply = tf.random.stateless_uniform(tf.shape(masks)[:1], seed) < prob
    take = chosen & apply[:, None, None] & (tf.shape(masks)[0] > 1)
    return tf.where(take[..., None], donor_images, images), tf.where(take, donor_masks, masks)


def _train_example(image, mask, pair_seed, image_size, scale_range, augment_data, strength="standard"):
    if augment_data:
        return augment(image, mask, pair_seed, image_size, scale_range, strength=strength)
    return resize_pair(image, mask, image_size)


def prepare(ds: tf.data.Dataset, *, training: bool, batch_size: int, image_size=None, seed: int = 0,
            scale_range=(0.5, 2.0), shuffle_buffer: int = 1000, augment_data: bool = True) -> tf.data.Dataset:
    """Batches of (float32 (B, H, W, 3), int32 (B, H, W)) for training or evaluation: one pass."""
    if training:
        if image_size is None:
            raise ValueError("training needs an image_size to crop to")
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(lambda example, pair_seed: _train_example(*example, pair_seed, image_size, scale_range,
                                                              augment_data),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
    elif image_size is not None:
        ds = ds.map(lambda i, m: resize_pair(i, m, image_size), num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size)
    else:
        ds = ds.map(pad_to_multiple, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.padded_batch(batch_size, padding_values=(0.0, IGNORE))
    return ds.prefetch(AUTOTUNE)


def training_stream(ds: tf.data.Dataset, *, batch_size: int, image_size, seed: int = 0, scale_range=(0.5, 2.0),
                    start_batch: int = 0, shuffle_buffer: int = 1000, augment_data: bool = True,
                    strength: str = "standard", paste=None) -> tf.data.Dataset:
    """Endless training batches, starting at batch `start_batch` of the stream (see the module docstring).

    Every pass over `ds` yields len(ds) // batch_size full batches (the rest of the pass is dropped), so
    batch k is batch k % per_pass of pass k // per_pass. Starting later skips the examples before it
    without augmenting them.
    """
    count = int(ds.cardinality())
    if count < 0:
        count = sum(1 for _ in ds)
    per_pass = count // batch_size
    if per_pass < 1:
        raise ValueError(f"{count} examples make no batch of {batch_size}")
    first_pass, skip = divmod(int(start_batch), per_pass)
    seed = tf.constant(seed, tf.int64)

    def one_pass(index, skip_examples):
        # Dataset.shuffle compares its seed pair with (0, 0) in Python, which fails for a tensor seed while
        # TensorFlow's global seed is 0 (--seed 0); without a graph seed the pass seed alone decides the order.
        graph = tf.compat.v1.get_default_graph()
        graph_seed, graph.seed = graph.seed, None
        try:
            shuffled = ds.shuffle(shuffle_buffer, seed=seed * 1_000_003 + index, reshuffle_each_iteration=False)
        finally:
            graph.seed = graph_seed
        numbered = tf.data.Dataset.zip((shuffled, tf.data.Dataset.range(count))).skip(skip_examples)
        examples = numbered.map(
            lambda example, position: _train_example(*example, tf.stack([seed, index * count + position]),
                                                     image_size, scale_range, augment_data, strength),
            num_parallel_calls=AUTOTUNE, deterministic=True)
        batches = examples.batch(batch_size, drop_remainder=True)
        if paste:
            class_ids, prob = paste
            first = skip_examples // batch_size
            numbered_batches = tf.data.Dataset.zip((batches, tf.data.Dataset.range(first, 2 ** 62)))
            # the batch's own seed pair: (seed, pass * per_pass + k) on a stream apart from the examples'
            batches = numbered_batches.map(
                lambda batch, k: paste_classes(*batch, class_ids, prob,
                                               tf.stack([seed + 0x5EED, index * per_pass + k])),
                num_parallel_calls=AUTOTUNE, deterministic=True)
        return batches

    passes = tf.data.Dataset.range(first_pass, 2 ** 62).map(
        lambda index: (index, tf.where(index == first_pass, tf.constant(skip * batch_size, tf.int64), 0)))
    return passes.flat_map(one_pass).prefetch(AUTOTUNE)
