"""The ``ponder`` command line: one module per command group.

``app`` holds the root group and the shared ``AppState``; ``ask``, ``plugins``, ``config`` and
``runs`` each add one command group; ``main`` wires them together and is the console script;
``docgen`` (``python -m ponder.cli.docgen``) regenerates the docs' tables from the registries.
The CLI is the top of the data flow: it may import every other ``ponder`` subpackage, and none of
them imports it (``ponder.testing.run_cli`` aside). Nothing here imports dspy or litellm at import
time, so ``ponder --help`` stays fast.
"""

from ponder.cli.app import AppState, cli
from ponder.cli.main import main

__all__ = ["AppState", "cli", "main"]
