"""Train a segmentation model and write a self-describing run folder.

    python train.py                                   # default model on the bundled CamVid sample
    python train.py --dataset voc --data-dir ~/data/VOCdevkit --epochs 50 --image-size 320 320
    python train.py --dataset camvid --data-dir ../shared/datasets/camvid --loss tversky_cce --class-weights auto
    python train.py --resume --run-dir runs/camvid-mobilenetv2_pix2pix-20261121-120000 [--epochs 60]
    python train.py --config runs/RUN/config.json --lr 2e-3      # repeat or vary a run; flags override

Flags mirror segkit.config.TrainConfig; the work is segkit.trainer.train / resume.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402

from errors import UserError  # noqa: E402
from segkit import cli, trainer  # noqa: E402
from segkit.config import add_config_flags, config_from_args, load_config_file  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="start from the settings in FILE: a run's config.json (or its folder), or a JSON/YAML "
                             "file of TrainConfig fields; flags given here override them (the run folder is new)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last checkpoint, with its config.json "
                             "(only --epochs may change)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resume:
        if not args.run_dir:
            raise UserError("--resume needs --run-dir pointing at the run to continue")
        others = cli.flags_given(args, ignore=("resume", "run_dir", "epochs"))
        if others:
            raise UserError(f"--resume takes its settings from the run's config.json; only --epochs may be given "
                            f"with it (got {', '.join(others)})")
        result = trainer.resume(args.run_dir, epochs=args.epochs)
    else:
        base = load_config_file(args.config) if args.config else None
        result = trainer.train(config_from_args(args, base))
    if result.stopped:
        print(result.stopped, file=sys.stderr)
        return 1
    print(f"best val mIoU {result.best_miou:.4f} at epoch {result.best_epoch}; run folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
