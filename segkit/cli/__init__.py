"""The command line: one module per command (train, evaluate, predict, export, verify; `segkit COMMAND`, see
main.py), and what they share: the entry point that turns a user's mistake into one line, and common flags.

    sys.exit(cli.run(main))          # UserError -> "error: ..." on stderr, exit status 2; Ctrl-C -> 130

Every command parses its flags before it imports TensorFlow, so `--help` and a mistyped flag answer at once:
the modules here import only the standard library, segkit.catalog and segkit.config at the top.
`add_inference_flags` / `inference_options` are the test-time flags of evaluate, predict and bench.latency
(flip and multi-scale averaging, a fixed input size, sliding windows, TFLite threads).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from segkit import catalog
from segkit.errors import UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: its C++ start-up lines


def prog(command: str) -> str:
    """The program name in a command's usage line: `train.py` when run as a script, else `segkit train`."""
    script = os.path.basename(sys.argv[0] or "")
    return script if script == f"{command}.py" else f"segkit {command}"


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake in the flags is one line (`error: ...`, exit status 2), as every other mistake:
    the usage with every choice runs to twenty lines and hides the message; --help shows it."""

    def error(self, message):
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


def parser(command: str, doc: str, **kwargs) -> Parser:
    """The argument parser of `command`, described by the first line of its module's docstring."""
    return Parser(prog=prog(command), description=doc.splitlines()[0], **kwargs)


def run(main, argv=None) -> int:
    """Call main(argv); UserError -> 'error: ...' and exit status 2, Ctrl-C -> status 130; a reader that
    closed our output (`segkit evaluate --json | head -1`) ends the command quietly (status 141, as SIGPIPE)."""
    try:
        return main(argv) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Python flushes stdout at exit and would report the broken pipe again: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def bounded_int(low: int, high: int):
    """An argparse type: an integer from `low` to `high`, else argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value
    return parse


def bounded_float(low: float, high: float):
    """An argparse type: a finite number from `low` to `high`, else argparse's one-line error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text}")
        return value
    return parse


def max_threads() -> int:
    """The most threads a flag may ask for: four per core this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 4 * cores


def add_data_option_flag(parser, default: str = "the run's own") -> None:
    """--data-option KEY=VALUE (repeatable): a dataset loader's option, as train's."""
    parser.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                        help=f"a loader option, repeatable, e.g. aug=true (voc), remap=true (folder), holdout=0006R0 "
                             f"(camvid) (default: {default})")


def flags_given(args, ignore=()) -> list:
    """The flags (as --names) the user typed: those whose parsed value is not None or False."""
    return ["--" + key.replace("_", "-") for key, value in vars(args).items()
            if key not in ignore and value is not None and value is not False]


def add_tta_flags(parser):
    """--tta and --scales (Predictor.logits' test-time augmentation)."""
    parser.add_argument("--tta", choices=catalog.TTA, default="none", help="flip: average with the mirrored image")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="multi-scale test-time augmentation, e.g. 0.75 1 1.25 (each from 0.1 to 8)")


def check_scales(scales) -> tuple:
    if any(not 0.1 <= s <= 8 for s in scales):
        raise UserError(f"--scales must be from 0.1 to 8, got {scales}")
    return tuple(scales)


def add_inference_flags(parser):
    """Test-time options shared by evaluate.py and predict.py."""
    add_tta_flags(parser)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="run the model at this size and resize its logits back (default: native size)")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                        help="sliding-window inference with tiles of this size for larger images")
    parser.add_argument("--threads", type=bounded_int(1, max_threads()),
                        help=f"threads for a .tflite model (1 to {max_threads()}: four per core)")


def inference_options(args) -> dict:
    """Predictor.logits' keyword options from the flags of `add_inference_flags`, checked."""
    for key in ("image_size", "window"):
        size = getattr(args, key)
        if size is not None and any(not 0 < s <= 16_384 or s % catalog.MULTIPLE for s in size):
            raise UserError(f"--{key.replace('_', '-')} must be two positive multiples of {catalog.MULTIPLE} "
                            f"(at most 16384), got {size}")
    return {"tta": args.tta, "scales": check_scales(args.scales), "input_size": args.image_size and tuple(args.image_size),
            "window": args.window and tuple(args.window)}


class Progress:
    """progress(done, total) -> a line on stderr: rewritten in place on a terminal, else one line every ~10%
    (so logs stay short). Ends with the rate once done == total."""

    def __init__(self, unit: str, stream=None):
        self.unit, self.stream = unit, stream or sys.stderr
        self.start, self.last_decile = time.perf_counter(), -1
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def __call__(self, done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        of = f"/{total}" if total > 0 else ""
        line = f"{done}{of} {self.unit}, {rate:.1f} {self.unit}/s"
        finished = total > 0 and done >= total
        if self.tty:
            print("\r" + line, end="\n" if finished else "", file=self.stream, flush=True)
            return
        decile = int(10 * done / total) if total > 0 else done // 50
        if decile != self.last_decile or finished:
            self.last_decile = decile
            print(line, file=self.stream, flush=True)
