"""``python -m spnas.ir show CODE|DIR|RUN [--json] [--image-size N [N]] [--plugin FILE]``: the same as ``spnas show``
(:mod:`spnas.show`)."""

import sys

from spnas.show import describe, main

__all__ = ["describe", "main"]

if __name__ == "__main__":
    sys.exit(main())
