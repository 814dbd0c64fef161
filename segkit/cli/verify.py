"""Check a dataset before training on it: image counts, class pixels, class weights, bad files.

    segkit verify --dataset voc --data-dir ~/data/VOCdevkit [--split train] [--data-option aug=true]

For every split found in the data dir (or the one given): the number of images, the pixels of each class,
median-frequency class weights, and every file that cannot be read or does not fit the dataset, one line
each (segkit.data.verify). Exit status: 0 when no problem was found, 1 when some file has a problem, 2 for a
usage error.
"""

from __future__ import annotations

import argparse

from segkit import catalog, cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("verify", __doc__)
    parser.add_argument("--dataset", required=True, choices=catalog.DATASETS, help="dataset")
    parser.add_argument("--data-dir", default=None, help="dataset folder (not needed for sample and shapes)")
    parser.add_argument("--split", default=None, help="check only this split (default: every split found)")
    cli.add_data_option_flag(parser, default="none")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from segkit.data import parse_option, verify

    options = verify.loader_options(args.dataset, dict(parse_option(o) for o in args.data_option or ()))
    splits = [args.split] if args.split else verify.find_splits(args.dataset, args.data_dir, options)
    found_problems = False
    for split in splits:
        report = verify.scan_split(args.dataset, args.data_dir, split, options)
        print(verify.format_report(args.dataset, report), flush=True)
        found_problems |= bool(report.problems)
    return 1 if found_problems else 0
