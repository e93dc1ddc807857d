"""`python -m bench.tabular` (the package's docstring says what it runs)."""

import sys

from bench.tabular.run import main

if __name__ == "__main__":
    sys.exit(main())
