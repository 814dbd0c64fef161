"""Export a trained model for serving (SavedModel), for mobile (TFLite), for ONNX runtimes or for shipping The same as `segkit export` (segkit/cli/export.py).

    python export.py --help
"""

import sys

from segkit import cli
from segkit.cli.export import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
