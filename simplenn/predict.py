"""``python -m simplenn.predict``: see :mod:`simplenn.cli.predict`."""

import sys

from .cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
