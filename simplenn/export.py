"""``python -m simplenn.export``: see :mod:`simplenn.cli.export`."""

import sys

from .cli.export import main

if __name__ == "__main__":
    sys.exit(main())
