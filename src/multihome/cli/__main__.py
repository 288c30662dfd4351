"""`python -m multihome.cli ...`: the `multihome` command."""

import sys

from .main import main

sys.exit(main())
