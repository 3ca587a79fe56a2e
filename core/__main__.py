"""``python -m ponder`` runs the CLI."""

import sys

from ponder.cli import main

sys.exit(main())
