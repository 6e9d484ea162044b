"""``python -m simplenn.evaluate``: see :mod:`simplenn.cli.evaluate`."""

import sys

from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
