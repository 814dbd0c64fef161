"""Latency of a model in each deployment format: Keras, SavedModel, TFLite.

    python -m bench.latency --model runs/sample-mobilenetv2_pix2pix-... exported/sample exported/sample.tflite \\
        --image-size 360 480 --threads 2 --runs 30

Each model is loaded with segkit.inference.predictor.load_predictor, as evaluate.py and predict.py load it, and
timed on one image of --image-size from float pixels to the class mask, through `Predictor.labels`
as predict.py calls it (padding to a multiple of 32 or, for a fixed-size TFLite file, resizing to its
size and back, included); `--output logits` times `Predictor.logits` instead (float logits at the
image's size, what evaluate.py averages over --tta views and predict.py --smooth over video frames).
Warm-up calls are left
out. Several models are timed in turn, one call each per round, so a machine whose load
changes during the run slows them all alike. Printed per model: median milliseconds per
image, frames per second (1000 / median) and the median CPU time per image over all threads
(the work done, which other jobs on the machine disturb less than the wall time).

--threads sets TensorFlow's intra-op threads (Keras, SavedModel) and the TFLite interpreter's
threads. SEGKIT_TFLITE_RUNTIME / SEGKIT_TFLITE_XNNPACK choose the TFLite runtime and kernels
(see segkit/tflite_runtime.py); --tflite-runtime and --xnnpack set them for this run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import statistics
import sys
import time

import numpy as np

from bench import machine
from segkit.errors import UserError
from segkit import cli
from segkit.fileio import size_of


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+",
                        help="run folders, .keras files, SavedModel folders or .tflite files")
    parser.add_argument("--image-size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"),
                        help="size of the image timed (default 360 480)")
    parser.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--output", choices=("labels", "logits"), default="labels",
                        help="what each call makes: the class mask (default) or the float logits")
    cli.add_tta_flags(parser)  # timed as evaluate.py/predict.py run them
    parser.add_argument("--tflite-runtime", choices=("tf", "litert"), help="TFLite runtime (default tf)")
    parser.add_argument("--xnnpack", choices=("auto", "on", "off"),
                        help="TFLite XNNPACK delegate (default auto: on for int8 files only)")
    return parser.parse_args(argv)


def run_size(predictor, size) -> tuple:
    """The (H, W) the model computes at for an image of `size`."""
    from segkit.inference.loading import MULTIPLE

    if predictor.fixed_size is not None:
        return tuple(predictor.fixed_size)
    return tuple(-(-s // MULTIPLE) * MULTIPLE for s in size)


def describe(predictor) -> str:
    """keras, savedmodel, onnx, or tflite-float32 / -fp16 / -dynamic / -int8 from the file's tensor types."""
    if predictor.kind != "tflite":
        return predictor.kind
    from segkit.inference.tflite_runtime import describe as describe_tflite

    return "tflite-" + describe_tflite(predictor.batch_fn.interpreter)


def time_models(predictors, image, runs: int, warmup: int, output: str = "labels", **options) -> list:
    """[(wall seconds, cpu seconds) per call] for each predictor, interleaved round by round; each call
    makes the `output` ("labels" or "logits") of one image."""
    calls = [getattr(predictor, output) for predictor in predictors]
    for call in calls:
        for _ in range(warmup):
            call(image, **options)
    times = [[] for _ in predictors]
    for _ in range(runs):
        for k, call in enumerate(calls):
            wall, cpu = time.perf_counter(), time.process_time()
            call(image, **options)
            times[k].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        raise UserError(f"--threads and --runs must be at least 1 and --warmup at least 0; got "
                        f"{args.threads}, {args.runs}, {args.warmup}")
    if any(s <= 0 for s in args.image_size):
        raise UserError(f"--image-size must be two positive sizes, got {args.image_size}")
    if args.tflite_runtime:
        os.environ["SEGKIT_TFLITE_RUNTIME"] = args.tflite_runtime
    if args.xnnpack:
        os.environ["SEGKIT_TFLITE_XNNPACK"] = args.xnnpack
    import tensorflow as tf

    # Before TensorFlow runs anything: the thread pools are made on first use.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from segkit.inference.predictor import load_predictor

    predictors = [load_predictor(path, num_threads=args.threads) for path in args.model]
    image = np.random.default_rng(0).integers(0, 256, (*args.image_size, 3)).astype(np.float32) / 255
    times = time_models(predictors, image, args.runs, args.warmup, args.output, tta=args.tta,
                        scales=cli.check_scales(args.scales))

    h, w = args.image_size
    tta = "" if args.tta == "none" and args.scales == [1.0] else f", --tta {args.tta} --scales {' '.join(map(str, args.scales))}"
    print(f"{h}x{w} image to {'class mask' if args.output == 'labels' else 'logits'}, {args.threads} thread(s), "
          f"median of {args.runs} calls after {args.warmup} warm-up{tta}")
    print(f"{'model':<48} {'format':<14} {'runs at':>9} {'MB':>6} {'ms':>8} {'frames/s':>9} {'cpu ms':>8}")
    for path, predictor, samples in zip(args.model, predictors, times):
        wall = statistics.median(t for t, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        at = "x".join(str(s) for s in run_size(predictor, args.image_size))
        name = path if len(path) <= 48 else "..." + path[-45:]
        print(f"{name:<48} {describe(predictor):<14} {at:>9} {size_of(predictor.path) / 1e6:6.1f} "
              f"{wall * 1e3:8.1f} {1 / wall:9.2f} {cpu * 1e3:8.1f}")
    print(machine.describe())
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
