"""Segment images, folders of images and videos with a trained model.

    segkit predict --model runs/sample-mobilenetv2_pix2pix-... street.png photos/ --out predictions/
    segkit predict --model pretrained/camvid.keras drive.mp4 --out out/ --smooth 0.6

For an image X.ext: X_mask.png (class indices as a palette PNG, the input's size) and
X_overlay.png (colours over the image, with a legend). For a video V.ext: V_overlay.mp4,
every frame segmented, same frame count and frame rate. Every input is checked before
anything is written, so a bad input leaves no half-written output behind. The work is
segkit.inference.predicting.
"""

from __future__ import annotations

import argparse

from segkit import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("predict", __doc__)
    parser.add_argument("--model", required=True, help="run folder, .keras file, SavedModel folder, .tflite or .onnx")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or video files")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--opacity", type=cli.bounded_float(0.0, 1.0), default=0.5,
                        help="opacity of the class colours over the image, 0 to 1 (default 0.5)")
    parser.add_argument("--smooth", type=cli.bounded_float(0.0, 0.999), default=0.0,
                        help="video only: exponential smoothing of logits across frames, 0 (off) to <1")
    cli.add_inference_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    options = cli.inference_options(args)
    from segkit import fileio
    from segkit.inference import predicting
    from segkit.inference.predictor import load_predictor

    fileio.check_writable(args.out, "--out", kind="folder")
    predictor = load_predictor(args.model, num_threads=args.threads)
    jobs = predicting.collect(args.inputs)
    for job, written, note in predicting.predict_jobs(predictor, jobs, args.out, options, args.opacity, args.smooth):
        print(f"{job.path} -> {', '.join(map(str, written))}" + (f": {note}" if note else ""))
    return 0
