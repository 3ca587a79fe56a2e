"""The console-script entry point: the root group with every built-in command group added.

Plugins add theirs through ``ponder_register_commands`` (see ``ponder.cli.app.PonderGroup``).
"""

from __future__ import annotations

import logging
import sys

import click

from ponder.cli.app import cli, log, report_error, wants_json
from ponder.cli.ask import add_ask_commands
from ponder.cli.batch import add_batch_commands
from ponder.cli.chat import add_chat_commands
from ponder.cli.config import add_config_commands
from ponder.cli.eval import add_eval_commands
from ponder.cli.optimize import add_optimize_commands
from ponder.cli.pipeline import add_pipeline_commands
from ponder.cli.plugins import add_plugins_command
from ponder.cli.runs import add_runs_command
from ponder.cli.sessions import add_sessions_commands
from ponder.errors import PonderError
from ponder.support import gcpause

add_ask_commands(cli)
add_plugins_command(cli)
add_config_commands(cli)
add_optimize_commands(cli)
add_runs_command(cli)
add_eval_commands(cli)
add_batch_commands(cli)
add_pipeline_commands(cli)
add_sessions_commands(cli)
add_chat_commands(cli)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv``: the arguments, for a caller in the same process)."""
    args = sys.argv[1:] if argv is None else list(argv)
    gcpause.pause()  # until the run's services exist (see ponder.support.gcpause)
    try:
        return _run(args, wants_json(args))
    finally:
        # no argv: the console script (or python -m ponder), and the process ends next
        gcpause.exiting() if argv is None else gcpause.end()


def _run(args: list[str], as_json: bool) -> int:
    """The command, with every error reported in ponder's words (and as JSON with --json)."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of raising it.
        result = cli.main(args=args, prog_name="ponder", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # usage errors: a bad flag, a missing argument
        if not as_json:
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(exc.ctx.get_usage(), err=True)
        return report_error(exc.format_message(), exc.exit_code, as_json=True)
    except click.exceptions.Abort:
        return report_error("ponder: aborted", 130, as_json=as_json)
    except PonderError as exc:  # raised outside a command (e.g. while resolving one)
        return report_error(str(exc), exc.exit_code, as_json=as_json,
                            run=getattr(exc, "ponder_run", None))
    except Exception as exc:  # a bug (ponder's or a plugin's): never let Python print it raw,
        # since its message or a chained cause may hold a key (a provider echoing it, a plugin)
        import traceback

        from ponder.engine.failures import clip_error
        from ponder.support.retry import describe_error, is_empty_response, is_retryable
        from ponder.support.secrets import redact

        debug = log.isEnabledFor(logging.DEBUG)
        if debug:  # -vv: the traceback too, redacted
            click.echo(redact("".join(traceback.format_exception(exc))).rstrip(), err=True)
        # a provider's error (dspy's LMError family, a 5xx after the retries) is not ponder's bug
        names = {c.__name__ for c in type(exc).__mro__}
        provider = is_retryable(exc) or "LMError" in names
        if "AdapterParseError" in names and not is_empty_response(exc):  # the model ignored
            # the output format (not a bug); an empty reply is the provider's, like a 5xx
            what = "error: the model's reply did not follow the output format"
        else:
            what = "error: the model call failed" if provider else "internal error"
        hint = "" if debug else " (run with -vv for the traceback)"
        # ponder's words (describe_error drops lm15's "never retries for you" advice), and
        # the reply a parse error quotes is cut: the hint must not drown under 20 MB of it
        text = clip_error(describe_error(exc))
        return report_error(f"ponder: {what}: {type(exc).__name__}: {text}{hint}", 1,
                            as_json=as_json, run=getattr(exc, "ponder_run", None))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
