"""`python -m jittercam.cli ...` runs the `jittercam` command."""
import sys

from . import main

sys.exit(main())
