"""What the scripts share: the entry point that turns a user's mistake into one line, and common flags.

    sys.exit(cli.run(main))          # UserError -> "error: ..." on stderr, exit status 2; Ctrl-C -> 130

`add_inference_flags` / `inference_options` are the test-time flags of evaluate.py, predict.py and
bench.latency (flip and multi-scale averaging, a fixed input size, sliding windows, TFLite threads).
"""

from __future__ import annotations

import sys
import time

from errors import UserError


def run(main, argv=None) -> int:
    """Call main(argv); UserError -> 'error: ...' and exit status 2, Ctrl-C -> status 130."""
    try:
        return main(argv) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def flags_given(args, ignore=()) -> list:
    """The flags (as --names) the user typed: those whose parsed value is not None or False."""
    return ["--" + key.replace("_", "-") for key, value in vars(args).items()
            if key not in ignore and value is not None and value is not False]


def add_tta_flags(parser):
    """--tta and --scales (Predictor.logits' test-time augmentation)."""
    parser.add_argument("--tta", choices=("none", "flip"), default="none", help="flip: average with the mirrored image")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="multi-scale test-time augmentation, e.g. 0.75 1 1.25")


def check_scales(scales) -> tuple:
    if any(not 0 < s < float("inf") for s in scales):
        raise UserError(f"--scales must be positive, got {scales}")
    return tuple(scales)


def add_inference_flags(parser):
    """Test-time options shared by evaluate.py and predict.py."""
    add_tta_flags(parser)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="run the model at this size and resize its logits back (default: native size)")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                        help="sliding-window inference with tiles of this size for larger images")
    parser.add_argument("--threads", type=int, help="threads for a .tflite model")


def inference_options(args) -> dict:
    """Predictor.logits' keyword options from the flags of `add_inference_flags`, checked."""
    for key in ("image_size", "window"):
        size = getattr(args, key)
        if size is not None and any(s <= 0 or s % 32 for s in size):
            raise UserError(f"--{key.replace('_', '-')} must be two positive multiples of 32, got {size}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
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
