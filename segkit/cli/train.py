"""Train a segmentation model and write a self-describing run folder.

    segkit train                                      # default model on the bundled CamVid sample
    segkit train --dataset voc --data-dir ~/data/VOCdevkit --epochs 50 --image-size 320 320
    segkit train --dataset camvid --data-dir ../shared/datasets/camvid --loss tversky_cce --class-weights auto
    segkit train --resume --run-dir runs/camvid-mobilenetv2_pix2pix-20261121-120000 [--epochs 60]
    segkit train --config runs/RUN/config.json --lr 2e-3      # repeat or vary a run; flags override

(`python train.py ...` from a clone is the same command.) Flags mirror segkit.config.TrainConfig; the work is
segkit.training.trainer.train / resume.
"""

from __future__ import annotations

import argparse
import sys

from segkit import cli
from segkit.config import add_config_flags, config_from_args, load_config_file
from segkit.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("train", __doc__)
    add_config_flags(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="start from the settings in FILE: a run's config.json (or its folder), or a JSON/YAML "
                             "file of TrainConfig fields; flags given here override them (the run folder is new)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last checkpoint, with its config.json "
                             "(only --epochs may change)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume:
        if not args.run_dir:
            raise UserError("--resume needs --run-dir pointing at the run to continue")
        others = cli.flags_given(args, ignore=("resume", "run_dir", "epochs"))
        if others:
            raise UserError(f"--resume takes its settings from the run's config.json; only --epochs may be given "
                            f"with it (got {', '.join(others)})")
        from segkit.training import trainer

        result = trainer.resume(args.run_dir, epochs=args.epochs)
    else:
        base = load_config_file(args.config) if args.config else None
        config = config_from_args(args, base)
        from segkit.training import trainer

        result = trainer.train(config)
    if result.stopped:
        print(result.stopped, file=sys.stderr)
        return 1
    print(f"best val mIoU {result.best_miou:.4f} at epoch {result.best_epoch}; run folder: {result.run_dir}")
    return 0
