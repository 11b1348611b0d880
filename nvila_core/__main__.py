"""`python -m nvila_core` runs the `nvila-core` command line."""

from nvila_core.cli import main

raise SystemExit(main())
