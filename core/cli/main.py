"""The console-script entry point: the root group with every built-in command group added.

Plugins add theirs through ``ponder_register_commands`` (see ``ponder.cli.app.PonderGroup``).
"""

from __future__ import annotations

import logging
import sys

import click

from ponder.cli.app import cli, log
from ponder.cli.ask import add_ask_commands
from ponder.cli.config import add_config_commands
from ponder.cli.plugins import add_plugins_command
from ponder.cli.runs import add_runs_command
from ponder.errors import PonderError

add_ask_commands(cli)
add_plugins_command(cli)
add_config_commands(cli)
add_runs_command(cli)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of raising it.
        result = cli.main(args=argv, prog_name="ponder", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("ponder: aborted", err=True)
        return 130
    except PonderError as exc:  # raised outside a command (e.g. while resolving one)
        from ponder.support.secrets import redact

        click.echo(f"ponder: error: {redact(str(exc))}", err=True)
        return exc.exit_code
    except Exception as exc:  # a bug (ponder's or a plugin's): never let Python print it raw,
        # since its message or a chained cause may hold a key (a provider echoing it, a plugin)
        import traceback

        from ponder.support.retry import is_retryable
        from ponder.support.secrets import redact

        debug = log.isEnabledFor(logging.DEBUG)
        if debug:  # -vv: the traceback too, redacted
            click.echo(redact("".join(traceback.format_exception(exc))).rstrip(), err=True)
        # a provider's error (dspy's LMError family, a 5xx after the retries) is not ponder's bug
        provider = is_retryable(exc) or "LMError" in {c.__name__ for c in type(exc).__mro__}
        what = "error: the model call failed" if provider else "internal error"
        hint = "" if debug else " (run with -vv for the traceback)"
        click.echo(f"ponder: {what}: {redact(f'{type(exc).__name__}: {exc}')}{hint}", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
