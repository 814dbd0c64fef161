"""The `segkit` command: `segkit COMMAND [FLAGS]`, one subcommand per job (each also a script in a clone).

    segkit train --dataset camvid --data-dir ~/data/camvid --model ddrnet
    segkit evaluate --model runs/RUN
    segkit predict --model pretrained/camvid.keras street.png
    segkit export --model runs/RUN --format tflite --quantize int8 --out camvid_int8.tflite
    segkit verify --dataset voc --data-dir ~/data/VOCdevkit
"""

from __future__ import annotations

import importlib
import sys

from segkit import cli

COMMANDS = {
    "train": "train a model into a run folder",
    "evaluate": "score a model on a dataset split",
    "predict": "segment images, folders and videos",
    "export": "write a SavedModel, TFLite, ONNX, .keras file or web site, checked against the source",
    "verify": "check a dataset's files and class pixels before training",
}


def usage() -> str:
    from segkit import __version__

    lines = [f"usage: segkit COMMAND [--help | FLAGS]   (segkit {__version__})", "", "commands:"]
    lines += [f"  {name:<9} {what}" for name, what in COMMANDS.items()]
    return "\n".join(lines + ["", "segkit COMMAND --help lists each command's flags."])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from segkit import __version__

        print(f"segkit {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        from segkit.errors import UserError

        raise UserError(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    return importlib.import_module(f"segkit.cli.{name}").main(argv[1:])


def entry() -> int:
    """The console script `segkit` (pyproject.toml)."""
    return cli.run(main)


if __name__ == "__main__":
    sys.exit(entry())
