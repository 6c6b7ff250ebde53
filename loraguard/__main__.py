"""`python -m loraguard ...`: the `loraguard` command, for environments where the console script is not on PATH."""

import sys

from loraguard.frontends.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
