"""`python -m nvila_nav.faults`: the fault suite (nvila_nav/faults/suite.py)."""

import sys

from nvila_nav.faults.suite import main

if __name__ == "__main__":
    sys.exit(main())
