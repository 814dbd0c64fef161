"""Train a segmentation model and write a self-describing run folder. The same as `segkit train` (segkit/cli/train.py).

    python train.py --help
"""

import sys

from segkit import cli
from segkit.cli.train import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
