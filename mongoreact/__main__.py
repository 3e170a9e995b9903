"""``python -m mongoreact``: the same as the ``mongoreact`` command."""

import sys

from .cli import main

sys.exit(main())
