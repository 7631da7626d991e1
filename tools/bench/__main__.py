"""`python -m tools.bench` (from the repository root): see tools/bench.py."""

import sys

from tools.bench.run import main

main(sys.argv[1:])
