"""``python -m simplenn.train``: see :mod:`simplenn.cli.train`."""

import sys

from .cli.train import main

if __name__ == "__main__":
    sys.exit(main())
