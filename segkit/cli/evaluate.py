"""Score a trained model on a dataset split, at each label's own resolution.

    segkit evaluate --model runs/sample-mobilenetv2_pix2pix-...        # the run's dataset, val split
    segkit evaluate --model pretrained/camvid.keras --dataset camvid --data-dir ../shared/datasets/camvid
    segkit evaluate --model model.tflite --dataset sample --json
    segkit evaluate --model RUN --tta flip --scales 0.75 1 1.25 --out eval/

--model takes a run folder, a .keras file, a SavedModel folder, a .tflite or an .onnx file. The work is
segkit.inference.scoring.evaluate_model: per-class IoU, Dice, precision, recall, pixel share, and the mean IoU
on the last line.
"""

from __future__ import annotations

import argparse
import json

from segkit import catalog, cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("evaluate", __doc__)
    parser.add_argument("--model", required=True, help="run folder, .keras file, SavedModel folder, .tflite or .onnx")
    parser.add_argument("--dataset", choices=catalog.DATASETS, help="dataset (default: the run's)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--split", default=None, help="split to score (default: the run's validation split)")
    cli.add_data_option_flag(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", help="also write metrics.json, confusion.png, worst.png, worst.txt and samples.png "
                                      "here (a new folder, or one an earlier evaluate wrote)")
    parser.add_argument("--worst", type=cli.bounded_int(0, 1000), default=6,
                        help="how many worst-scoring images --out draws (default 6)")
    parser.add_argument("--samples", type=cli.bounded_int(0, 1000), default=4,
                        help="how many images, evenly spaced over the split, --out draws in samples.png (default 4)")
    parser.add_argument("--limit", type=cli.bounded_int(1, 10 ** 9), help="score only the first N images")
    parser.add_argument("--batch-size", type=cli.bounded_int(1, 4096), default=8,
                        help="consecutive images of one size predicted together (default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    cli.add_inference_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    options = cli.inference_options(args)
    from segkit.inference import scoring

    if args.out:
        scoring.check_out(args.out)  # before scoring the whole split
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
