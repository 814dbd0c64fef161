"""Segment images, folders of images and videos with a trained model. The same as `segkit predict` (segkit/cli/predict.py).

    python predict.py --help
"""

import sys

from segkit import cli
from segkit.cli.predict import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
