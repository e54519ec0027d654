"""``python -m asyncovf`` runs the command line."""

import sys

from asyncovf.cli import main

sys.exit(main())
