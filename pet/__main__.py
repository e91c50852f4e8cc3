"""``python -m pet`` is the ``pet`` command."""

import sys

from pet.cli.main import main

sys.exit(main())
