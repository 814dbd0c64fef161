"""Throughput of the training input pipeline alone: images/s of `prepare(..., training=True)` over a split.

    python -m bench.data_speed --dataset camvid --data-dir DIR --image-size 352 480 --batch-size 8
    python -m bench.data_speed --dataset camvid --data-dir DIR                      # train.py's default crop

Pass 1 reads and decodes every file (and fills the in-memory cache of decoded images); the later
passes start from the cache and pay for shuffling, random scale, crop, flip, colour jitter and
batching only, which is what every epoch after the first costs. Each pass is one epoch of
(images // batch) batches, as train.py makes them, consumed as fast as possible.

Besides images/s (with every core of the machine free for tf.data), the CPU time per image is
printed: during training the pipeline shares the cores with the model, so a model training at R
images/s leaves R x (CPU s per image) cores to the pipeline's work. Compare with
`python -m bench.train_speed --model NAME --image-size H W --batch-size B`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from bench import machine  # noqa: E402
from segkit import data  # noqa: E402
from segkit.data.pipeline import prepare  # noqa: E402
from segkit.errors import UserError  # noqa: E402
from segkit import cli  # noqa: E402
from segkit.config import TrainConfig, validate  # noqa: E402


def parse_args(argv):
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default=defaults.dataset, help=f"one of {sorted(data.DATASETS)}")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default=defaults.train_split)
    parser.add_argument("--image-size", type=int, nargs=2, default=defaults.image_size, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--scale-min", type=float, default=defaults.scale_min)
    parser.add_argument("--scale-max", type=float, default=defaults.scale_max)
    parser.add_argument("--passes", type=int, default=3, help="epochs over the split; the first decodes the files")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args(argv)
    validate(TrainConfig(dataset=args.dataset, image_size=tuple(args.image_size), batch_size=args.batch_size,
                         scale_min=args.scale_min, scale_max=args.scale_max))
    if args.passes < 1:
        raise UserError(f"--passes must be at least 1, got {args.passes}")
    return args


def time_pass(ds):
    """(images, wall seconds, CPU seconds of this process) for one pass over `ds`."""
    wall, cpu = time.perf_counter(), time.process_time()
    images = 0
    for batch, _ in ds:
        images += int(batch.shape[0])
    return images, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    args = parse_args(argv)
    raw, info = data.load_dataset(args.dataset, args.data_dir, args.split)
    ds = prepare(raw, training=True, batch_size=args.batch_size, image_size=tuple(args.image_size), seed=0,
                 scale_range=(args.scale_min, args.scale_max))
    h, w = args.image_size
    print(f"{info.name} {args.split}: {len(info.files) or 'generated'} images, crops {h}x{w}, batch {args.batch_size}, "
          f"scale {args.scale_min}-{args.scale_max}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    results = []
    with data.data_errors_as_user_errors(info):
        for k in range(1, args.passes + 1):
            images, wall, cpu = time_pass(ds)
            if images == 0:
                raise UserError(f"{info.name} {args.split} has fewer images than one batch of {args.batch_size}")
            what = ("generated + augment" if not info.files else
                    "read + decode + augment" if k == 1 else "cached: augment only")
            print(f"pass {k}: {images / wall:7.1f} images/s ({images} images in {wall:.1f} s; "
                  f"{1000 * cpu / images:.1f} ms CPU per image; {what})", flush=True)
            results.append({"pass": k, "images": images, "seconds": round(wall, 3), "images_per_sec":
                            round(images / wall, 2), "cpu_ms_per_image": round(1000 * cpu / images, 2)})
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        print(json.dumps({"dataset": info.name, "split": args.split, "image_size": [h, w],
                          "batch_size": args.batch_size, "passes": results}))
    print(machine.describe())
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
