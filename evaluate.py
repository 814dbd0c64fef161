"""Score a trained model on a dataset split, at each label's own resolution. The same as `segkit evaluate` (segkit/cli/evaluate.py).

    python evaluate.py --help
"""

import sys

from segkit import cli
from segkit.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
