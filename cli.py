"""The scripts' shared entry point: a user's mistake is one line on stderr, never a traceback."""

from __future__ import annotations

import sys

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
