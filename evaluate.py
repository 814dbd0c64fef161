"""Score a trained model on a dataset split, at each label's own resolution.

    python evaluate.py --model runs/sample-mobilenetv2_pix2pix-...        # the run's dataset, val split
    python evaluate.py --model pretrained/camvid.keras --dataset camvid --data-dir ../shared/datasets/camvid
    python evaluate.py --model model.tflite --dataset sample --json
    python evaluate.py --model RUN --tta flip --scales 0.75 1 1.25 --out eval/

--model takes a run folder, a .keras file, a SavedModel folder or a .tflite file. The work is
segkit.scoring.evaluate_model: per-class IoU, Dice, precision, recall, pixel share, and the mean IoU
on the last line.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from segkit import cli, fileio, scoring  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder, .keras file, SavedModel folder or .tflite file")
    parser.add_argument("--dataset", help="dataset name (default: the run's)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--split", default=None, help="split to score (default: the run's validation split)")
    parser.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                        help="a loader option, repeatable (default: the run's own, e.g. aug=true for voc)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", help="also write metrics.json, confusion.png, worst.png and samples.png here")
    parser.add_argument("--worst", type=int, default=6, help="how many worst-scoring images --out draws")
    parser.add_argument("--samples", type=int, default=4,
                        help="how many images, evenly spaced over the split, --out draws in samples.png")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="consecutive images of one size predicted together (default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    cli.add_inference_flags(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    options = cli.inference_options(args)
    if args.out:
        fileio.check_writable(args.out, "--out", kind="folder")  # before scoring the whole split
    result = scoring.evaluate_model(args.model, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                                    data_options=args.data_option,
                                    limit=args.limit, worst=args.worst if args.out else 0,
                                    samples=args.samples if args.out else 0, num_threads=args.threads,
                                    batch_size=args.batch_size, progress=None if args.quiet else cli.Progress("images"),
                                    **options)
    if args.out:
        scoring.write_outputs(result, args.out)
    if args.json:
        print(json.dumps(scoring.as_json(result.report, result.count)))
    else:
        print(f"{result.predictor.kind} model {result.predictor.path} on {result.info.name}/{result.split}: "
              f"{result.count} images")
        print(scoring.table(result.report))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
