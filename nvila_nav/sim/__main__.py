"""`python -m nvila_nav.sim ...` is the same as `nvila-sim ...`."""

from nvila_nav.sim.cli import main

raise SystemExit(main())
