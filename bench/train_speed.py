"""Training and inference images/s of one model, through train.py's own code path, on generated data.

    python -m bench.train_speed --model resnet34_unet --image-size 224 224 --batch-size 8
    python -m bench.train_speed --model mobilenetv2_pix2pix --image-size 224 224 --batch-size 8 --precision float32
    python -m bench.train_speed --model mobilenetv2_pix2pix --image-size 224 224 --batch-size 8 --jit-compile
    python -m bench.train_speed --model ddrnet --variant tiny --image-size 352 480 \
        --distill-from pretrained/camvid.keras

What is timed is what train.py runs: the model, loss, mIoU metric, AdamW and compile come from
`segkit.training.loop_keras.build_and_compile` (unet_tf: `models.unet_tf.make_train_step`, as segkit.training.loop_tf), the precision
from `runtime.set_precision`, and the batches from `data.pipeline.prepare(training=True)` over the `shapes`
dataset. The generated scenes are cached in memory first, as the file loaders cache decoded images, so the
timed steps pay for augmentation and batching but not for drawing the scenes.

Training: `--warmup` steps of model.fit (tracing), then one model.fit of `--steps` steps with
steps_per_epoch, as train.py calls it. Reported: steady images/s from the end of the first timed step to
the end of the last (how history.csv's train_images_per_sec is measured), and the wall-clock rate of the
whole fit call, which also pays for starting and stopping the input pipeline (stopping it waits for
tf.data's autotuning thread, up to tens of seconds here; once per fit call, so once per run in train.py,
whose fit is one call for every epoch). Inference: the median time of
model.predict_on_batch on one batch, over `--steps` calls after two warm-up calls.
Figures depend on the machine's load: the load average is printed with them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from segkit import data  # noqa: E402
from segkit import losses  # noqa: E402
from segkit import models  # noqa: E402
from segkit.data.common import default_colors  # noqa: E402
from segkit.data.pipeline import prepare  # noqa: E402
from segkit.errors import UserError  # noqa: E402
from segkit.inference.loading import read_info  # noqa: E402
from bench import machine  # noqa: E402
from bench.flops import TRAINING_FACTOR, model_flops  # noqa: E402
from segkit import cli, runtime  # noqa: E402
from segkit.training import batchnorm
from segkit.config import TrainConfig, validate  # noqa: E402
from segkit.training.loop_keras import build_and_compile, keras_model_at  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=models.DEFAULT_MODEL, help=f"one of {sorted(models.MODELS)}")
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto", help="auto | float32 | bfloat16 | float16, as train.py")
    parser.add_argument("--loss", default="cce", help="as train.py's --loss")
    parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--alpha", type=float, default=None, help="MobileNet width, as train.py's --alpha")
    parser.add_argument("--variant", default=None, help="the model's variant, as train.py's --variant")
    parser.add_argument("--head-stride", type=int, default=None, help="ddrnet's head stride, as train.py's --head-stride")
    parser.add_argument("--aux-weight", type=float, default=0.0,
                        help="ddrnet: train with the auxiliary head, as train.py's --aux-weight (0: none)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="logit channels (default: shapes' 4, or the teacher's with --distill-from)")
    parser.add_argument("--distill-from", default=None, metavar="PATH",
                        help="time distillation from this trained model (.keras file or run folder), as train.py's "
                             "--distill-from: its forward pass runs on every training batch")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps and inference batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (tracing)")
    parser.add_argument("--count", type=int, default=64, help="generated scenes, cached, shuffled each pass")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="the CPU's matmul peak in GFLOP/s, for the share of it training reaches (default: "
                             "measured here, a 2048x2048 matmul in the policy's compute dtype, bench.machine)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args(argv)
    for flag in ("steps", "warmup", "count"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.count < args.batch_size:
        raise UserError(f"--count ({args.count}) must be at least --batch-size ({args.batch_size})")
    return args


def teacher_classes(source: str) -> int:
    """How many classes the --distill-from model predicts: its recorded class names (no loading; train.py's
    load_teacher loads it once and checks), else its output channels."""
    info = read_info(Path(source))
    if info is not None:
        return len(info["class_names"])
    return keras_model_at(source, "--distill-from")[1].outputs[0].shape[-1]


def bench_config(args) -> TrainConfig:
    config = TrainConfig(dataset="shapes", model=args.model, image_size=tuple(args.image_size),
                         batch_size=args.batch_size, precision=args.precision, loss=args.loss,
                         jit_compile=args.jit_compile, alpha=args.alpha, variant=args.variant,
                         head_stride=args.head_stride, aux_weight=args.aux_weight, epochs=1,
                         steps_per_epoch=args.steps, distill_from=args.distill_from)
    validate(config)
    return config


def shapes_data(config, count, num_classes):
    """(cached raw dataset, training batches as train.py makes them, DatasetInfo with `num_classes`)."""
    raw, info = data.load_dataset("shapes", count=count, image_size=config.image_size)
    raw = raw.cache()
    for _ in raw:  # draw every scene once, into the cache
        pass
    if num_classes is not None:
        if num_classes < 2:
            raise UserError(f"--num-classes must be at least 2, got {num_classes}")
        info = dataclasses.replace(info, class_names=tuple(f"class{i}" for i in range(num_classes)),
                                   colors=default_colors(num_classes))
    batches = prepare(raw, training=True, batch_size=config.batch_size, image_size=config.image_size,
                      seed=config.seed, scale_range=(config.scale_min, config.scale_max)).repeat()
    return raw, batches, info


class BatchTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        float((logs or {}).get("loss", 0.0))  # as train.py's recorder: reading the loss waits for the step
        self.ends.append(time.perf_counter())


def time_keras(config, info, batches, steps, warmup):
    """(train steady images/s, train wall images/s, infer images/s, parameters) of train.py's Keras model."""
    model = build_and_compile(config, info, steps, None)
    with batchnorm.fused():  # as segkit.training.loop_keras.fit trains
        model.fit(batches, epochs=1, steps_per_epoch=warmup, verbose=0)
        timer = BatchTimes()
        start = time.perf_counter()
        model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        wall = time.perf_counter() - start
    b = config.batch_size
    steady = (steps - 1) * b / (timer.ends[-1] - timer.ends[0]) if steps > 1 else float("nan")

    images = next(iter(batches))[0]
    for _ in range(2):
        model.predict_on_batch(images)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.predict_on_batch(images)
        times.append(time.perf_counter() - t)
    student = getattr(model, "student", model)  # with --distill-from: the network trained, not its teacher
    return steady, steps * b / wall, b / statistics.median(times), student.count_params()


def time_unet_tf(config, info, batches, steps, warmup):
    """The same figures for unet_tf, with segkit.training.loop_tf's step (GradientTape + AdamTF, float32)."""
    from segkit.models.unet_tf import AdamTF, make_train_step

    model = models.build_model("unet_tf", info.num_classes, **config.model_options())
    loss_fn = losses.get_loss(config.loss, info.num_classes, ignore_index=info.ignore_index)
    step = make_train_step(model, loss_fn, AdamTF(model.trainable_variables))
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    lr = tf.constant(config.lr, tf.float32)
    iterator = iter(batches)
    for _ in range(warmup):
        float(step(*next(iterator), lr))
    ends = []
    start = time.perf_counter()
    for _ in range(steps):
        float(step(*next(iterator), lr))  # segkit.training.loop_tf reads each loss too
        ends.append(time.perf_counter())
    wall = time.perf_counter() - start
    b = config.batch_size
    steady = (steps - 1) * b / (ends[-1] - ends[0]) if steps > 1 else float("nan")
    images = next(iterator)[0]
    for _ in range(2):
        forward(images).numpy()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        forward(images).numpy()
        times.append(time.perf_counter() - t)
    count = sum(int(np.prod(v.shape)) for v in model.variables)
    return steady, steps * b / wall, b / statistics.median(times), count


def main(argv=None) -> int:
    args = parse_args(argv)
    config = bench_config(args)
    if config.model not in models.MODELS:
        raise UserError(f"unknown model {config.model!r}; choose from {sorted(models.MODELS)}")
    if config.model == "unet_tf" and config.jit_compile:
        raise UserError("--jit-compile applies to the Keras models; unet_tf's step is a plain tf.function")
    policy = runtime.set_precision(config.precision, config.model)
    keras.utils.set_random_seed(config.seed)
    load_before = os.getloadavg()[0]
    num_classes = args.num_classes
    if config.distill_from and num_classes is None:  # the teacher decides how many classes the student predicts
        num_classes = teacher_classes(config.distill_from)
    _, batches, info = shapes_data(config, args.count, num_classes)

    timer = time_unet_tf if config.model == "unet_tf" else time_keras
    steady, wall, infer, params = timer(config, info, batches, args.steps, args.warmup)
    result = {"model": config.model, "image_size": list(config.image_size), "batch_size": config.batch_size,
              "num_classes": info.num_classes, "loss": config.loss, "precision": config.precision, "policy": policy,
              "jit_compile": config.jit_compile, "parameters": params, "steps": args.steps,
              "train_images_per_sec": round(steady, 2), "train_wall_images_per_sec": round(wall, 2),
              "infer_images_per_sec": round(infer, 2),
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "tensorflow": tf.__version__, "keras": keras.__version__}
    if config.distill_from:
        result["distill_from"] = config.distill_from
    # the share of peak counts the trained network's work; a teacher's forward pass is not in it, so none is given
    counted = config.model != "unet_tf" and not config.distill_from
    flops = model_flops(config.model, config.image_size, info.num_classes, **config.model_options()) if counted else None
    peak = args.peak_gflops or machine.matmul_peak("bfloat16" if "bfloat16" in policy else "float32")
    result.update({"cpu": machine.cpu(), "peak_gflops": round(peak, 1)})
    if flops:
        achieved = TRAINING_FACTOR * flops * steady / 1e9
        result.update({"forward_gflop_per_image": round(flops / 1e9, 3), "train_gflops": round(achieved, 1),
                       "share_of_peak": round(achieved / peak, 3)})
    h, w = config.image_size
    print(f"{config.model} {h}x{w} batch {config.batch_size}, {info.num_classes} classes, loss {config.loss}, "
          f"{policy}{', XLA' if config.jit_compile else ''}, {params:,} parameters")
    print(f"train  {steady:7.2f} images/s steady ({args.steps} steps after {args.warmup} warm-up; "
          f"{wall:.2f} images/s over the whole fit call)")
    print(f"infer  {infer:7.2f} images/s (median batch of {args.steps})")
    if flops:
        print(f"work   {flops / 1e9:.2f} GFLOP forward per image; training at {result['train_gflops']:.0f} GFLOP/s "
              f"({TRAINING_FACTOR}x forward) = {100 * result['share_of_peak']:.0f}% of {peak:.0f} GFLOP/s "
              f"(the {'bf16' if 'bfloat16' in policy else 'float32'} matmul peak measured here)")
    print(f"{machine.describe()}; load average {load_before:.2f} before the run")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
