"""Segment images, folders of images and videos with a trained model.

    python predict.py --model runs/sample-mobilenetv2_pix2pix-... street.png photos/ --out predictions/
    python predict.py --model pretrained/camvid.keras drive.mp4 --out out/ --smooth 0.6

For an image X.ext: X_mask.png (class indices as a palette PNG, the input's size) and
X_overlay.png (colours over the image, with a legend). For a video V.ext: V_overlay.mp4,
every frame segmented, same frame count and frame rate. Every input is checked before
anything is written, so a bad input leaves no half-written output behind. The work is
segkit.predicting.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402

from errors import UserError  # noqa: E402
from segkit import cli, fileio, predicting  # noqa: E402
from segkit.inference import load_predictor  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder, .keras file, SavedModel folder or .tflite file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or video files")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    parser.add_argument("--smooth", type=float, default=0.0,
                        help="video only: exponential smoothing of logits across frames, 0 (off) to <1")
    cli.add_inference_flags(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    options = cli.inference_options(args)
    if not 0 <= args.smooth < 1:
        raise UserError(f"--smooth must be in [0, 1), got {args.smooth}")
    fileio.check_writable(args.out, "--out", kind="folder")
    predictor = load_predictor(args.model, num_threads=args.threads)
    jobs = predicting.collect(args.inputs)
    for job, written, note in predicting.predict_jobs(predictor, jobs, args.out, options, args.alpha, args.smooth):
        print(f"{job.path} -> {', '.join(map(str, written))}" + (f": {note}" if note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
