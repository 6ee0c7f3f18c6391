"""`python -m munggoggo` is the `munggoggo` command."""

import sys

from .cli import main

sys.exit(main())
