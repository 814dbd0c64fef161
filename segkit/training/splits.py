"""The training and validation data of a run, as both training loops take it.

`make_splits(config, run)` loads the config's splits, shares them between workers, batches them
(data.pipeline: an endless, resumable stream of random scale/crop/flip/jitter batches for
training; native size or --val-image-size for validation), works out the class weights and picks the validation images drawn every epoch.
Refused first, in one line: a split smaller than one batch, a training split without a labelled pixel,
and sizes whose training or validation step would not fit in memory (segkit.memory).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from segkit import data
from segkit import losses
from segkit.data.common import evenly_spaced, shard_files
from segkit.data.pipeline import pad_to_multiple, prepare, training_stream
from segkit.errors import UserError
from segkit import memory, runtime


@dataclasses.dataclass
class Splits:
    """What a training loop needs from the data."""

    train: tf.data.Dataset  # endless batches of (images, masks)
    val: tf.data.Dataset  # one pass of validation batches
    info: data.DatasetInfo
    steps: int  # training steps per epoch
    global_batch: int  # images per step over all replicas
    num_train: int  # images in the training split
    class_weights: list | None
    sample_images: np.ndarray | None  # validation images drawn every epoch, with their masks
    sample_masks: np.ndarray | None
    sharding: str = "none"  # how workers share the training split (see worker_share)
    val_sharding: str = "none"
    val_info: data.DatasetInfo | None = None  # the validation split's (its file list names bad files)


def paste_option(config, info):
    """(class ids, probability) for training_stream's copy-paste, or None; --paste-classes names classes by
    name (any case) or index."""
    if not config.paste_classes:
        return None
    names = {name.lower(): i for i, name in enumerate(info.class_names)}
    ids = []
    for item in (part.strip() for part in config.paste_classes.split(",")):
        if item.isdigit() and int(item) < info.num_classes:
            ids.append(int(item))
        elif item.lower() in names:
            ids.append(names[item.lower()])
        else:
            raise UserError(f"--paste-classes: {item!r} is not a class of {info.name} (its classes: "
                            f"{', '.join(info.class_names)}; or an index 0-{info.num_classes - 1})")
    return tuple(sorted(set(ids))), float(config.paste_prob)


def class_weights(config, train_raw, info):
    """None, the median-frequency weights over `train_raw` ("auto"), or the numbers given."""
    if config.class_weights is None:
        return None
    if config.class_weights == "auto":
        counts = data.class_pixel_counts(train_raw, info.num_classes)
        weights = losses.class_weights_from_counts(counts)
        print("class weights (median frequency):", ", ".join(f"{n}={w:.2f}" for n, w in zip(info.class_names, weights)))
        return [float(w) for w in weights]
    try:
        weights = [float(w) for w in config.class_weights.split(",")]
    except ValueError:
        raise UserError(f"--class-weights must be 'auto' or comma-separated numbers, got {config.class_weights!r}") from None
    if len(weights) != info.num_classes:
        raise UserError(f"--class-weights has {len(weights)} values but {info.name} has {info.num_classes} classes")
    return weights


def worker_share(config, workers, split, raw, min_examples=1):
    """(dataset, sharding): the part of `split` this worker reads, and how the split is shared between workers.

    "files": a loader with a file list is made again inside `shard_files`, so each worker decodes only its own
    files (tf.data's auto-sharding is then turned off). "data": generated or tfds data, or a share smaller than
    `min_examples`; every worker makes all of it and keeps its part (tf.data's DATA auto-shard). "none": one
    worker. Each worker's training batches hold the global batch (tf.distribute splits them between the
    replicas), so a training share needs at least that many examples.
    """
    if workers["num_workers"] == 1:
        return raw, "none"
    with shard_files(workers["num_workers"], workers["rank"]) as sharded:
        part, _ = data.load_dataset(config.dataset, config.data_dir, split, **config.loader_options())
    if sharded and int(part.cardinality()) >= min_examples:
        return part, "files"
    return raw, "data"


def with_shard_policy(ds, sharding):
    """`ds` with the tf.data auto-shard policy for `worker_share`'s answer."""
    if sharding == "none":
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if sharding == "files" else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def check_labelled(train_raw, info, num_train: int, data_dir=None) -> None:
    """Refuse a training split in which no mask has a labelled pixel (every pixel void / ignore): the loss
    would be 0 at every step and the run would save an untrained model. Reading stops at the first mask
    with a labelled pixel, so a usual split costs one decoded example."""
    for _, mask in train_raw.as_numpy_iterator():
        if np.any((mask >= 0) & (mask < info.num_classes)):
            return
    raise UserError(f"{info.name}/{info.split}: none of its {num_train} masks has a labelled pixel (all are "
                    f"void / ignore {info.ignore_index}); training would learn nothing. Check its label files "
                    f"(segkit verify --dataset {info.name}"
                    + (f" --data-dir {data_dir}" if data_dir else "") + f" --split {info.split})")


def first_size(raw) -> tuple | None:
    """(H, W) of the first example of `raw`, or None for an empty dataset."""
    for image, _ in raw.take(1).as_numpy_iterator():
        return tuple(int(v) for v in image.shape[:2])
    return None


def sample_batch(val_raw, count):
    """`count` validation examples spread evenly over the split, padded to a common multiple of 32
    (the same ones every epoch, so the pictures show progress)."""
    if count <= 0:
        return None, None
    total = int(val_raw.cardinality())
    wanted = evenly_spaced(total, count) if total > 0 else None
    examples = [e for k, e in enumerate(val_raw.take(total if total > 0 else count).map(pad_to_multiple)
                                        .as_numpy_iterator()) if wanted is None or k in wanted]
    if not examples:
        return None, None
    h = max(e[0].shape[0] for e in examples)
    w = max(e[0].shape[1] for e in examples)
    images = np.stack([np.pad(i, ((0, h - i.shape[0]), (0, w - i.shape[1]), (0, 0))) for i, _ in examples])
    masks = np.stack([np.pad(m, ((0, h - m.shape[0]), (0, w - m.shape[1])), constant_values=255) for _, m in examples])
    return images, masks


def make_splits(config, replicas: int, start_epoch: int = 0) -> Splits:
    """Load, share, batch and describe the config's training and validation splits; the training batches
    start where epoch `start_epoch` starts (data.pipeline.training_stream), so a resumed run reads what
    an unbroken one would."""
    train_raw, info = data.load_dataset(config.dataset, config.data_dir, config.train_split, **config.loader_options())
    val_raw, val_info = data.load_dataset(config.dataset, config.data_dir, config.val_split, **config.loader_options())
    with data.data_errors_as_user_errors(info, val_info):
        workers = runtime.worker_info()
        global_batch = config.batch_size * replicas
        num_train = int(train_raw.cardinality())
        if num_train < 0:
            num_train = sum(1 for _ in train_raw)
        if num_train < global_batch:
            raise UserError(f"{info.name}/{config.train_split} has {num_train} image(s), fewer than one batch of "
                            f"{global_batch}: nothing would be trained; lower --batch-size or add images")
        memory.check_training_size(config.model, config.batch_size, config.image_size)
        val_size = config.val_image_size or first_size(val_raw)
        if val_size is not None:  # validation batches at native size are padded to a multiple of 32
            memory.check_inference_size(*val_size, config.model, batch=config.batch_size, flag="--val-image-size")
        check_labelled(train_raw, info, num_train, config.data_dir)
        steps = config.steps_per_epoch or num_train // global_batch
        train_part, sharding = worker_share(config, workers, config.train_split, train_raw, min_examples=global_batch)
        val_part, val_sharding = worker_share(config, workers, config.val_split, val_raw)
        train_ds = training_stream(train_part, batch_size=global_batch, image_size=config.image_size,
                                   seed=config.seed, scale_range=(config.scale_min, config.scale_max),
                                   start_batch=start_epoch * steps, strength=config.augment,
                                   paste=paste_option(config, info))
        val_ds = prepare(val_part, training=False, batch_size=global_batch, image_size=config.val_image_size)
        weights = class_weights(config, train_raw, info)  # from every file, so all workers use the same weights
        sample_images, sample_masks = sample_batch(val_raw, config.num_samples)
    return Splits(with_shard_policy(train_ds, sharding), with_shard_policy(val_ds, val_sharding), info, steps,
                  global_batch, num_train, weights, sample_images, sample_masks, sharding, val_sharding, val_info)
