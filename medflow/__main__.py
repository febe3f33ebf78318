"""`python -m medflow` runs the same command line as the `medflow` script."""

import sys

from medflow.cli import main

sys.exit(main())
