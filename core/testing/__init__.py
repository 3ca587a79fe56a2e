"""Helpers for testing ponder and ponder plugins.

Plugin authors use the same helpers ponder's own tests use:

- :func:`plugin_set` — a plugin manager holding only the plugins you give it (strict by default);
- :func:`run_cli` — run the ``ponder`` command line in-process and capture its output;
- :func:`isolated_user_dir` — a fresh config/cache/data directory and a clean ``PONDER_*``
  environment, so a developer's own settings never leak into a test;
- :mod:`ponder.testing.conformance` — one reusable test suite per component kind;
- :mod:`ponder.testing.fake_provider` — a loopback server speaking the OpenAI API.

Example::

    from ponder import hookimpl
    from ponder.testing import plugin_set

    class MyPlugin:
        @hookimpl
        def ponder_register_strategies(self, register):
            register("shout", ShoutStrategy)

    plugins = plugin_set(MyPlugin())
    assert "shout" in plugins.strategies
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ponder.kernel.loader import PluginSet, load_plugins


def plugin_set(*plugins: Any, entry_points: bool = False, strict: bool = True,
               modules: Sequence[str] = (), **kwargs: Any) -> PluginSet:
    """Load exactly ``plugins`` (objects or modules with hook implementations), then freeze.

    With ``entry_points=True`` the installed plugins load too (as ``ponder`` itself would).
    Strict by default: a plugin that fails to load raises instead of warning.
    """
    return load_plugins(entry_points=entry_points, objects=plugins, modules=modules,
                        strict=strict, **kwargs)


@attrs.frozen
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
            input: str | None = None) -> CliResult:
    """Run ``ponder ARGS`` in this process; returns exit code, stdout and stderr separately.

    ``env`` entries are set for the duration of the call (a value of ``None`` unsets).
    """
    from click.testing import CliRunner

    from ponder.cli import main

    runner = CliRunner()
    with runner.isolation(input=input, env=dict(env or {})) as outstreams:
        exit_code = main(list(args))
        stdout = outstreams[0].getvalue().decode()
        stderr = outstreams[1].getvalue().decode() if outstreams[1] is not None else ""
    return CliResult(exit_code, stdout, stderr)


@contextlib.contextmanager
def isolated_user_dir(root: str | os.PathLike[str], *, chdir: bool = True) -> Iterator[Path]:
    """Point ponder's config, cache and data directories at ``root`` and clear ``PONDER_*``.

    Restores the environment and working directory afterwards.
    """
    root = Path(root)
    saved_env = dict(os.environ)
    saved_cwd = Path.cwd()
    try:
        for key in [k for k in os.environ if k.startswith("PONDER_")]:
            del os.environ[key]
        for name in ("config", "cache", "data"):
            (root / name).mkdir(parents=True, exist_ok=True)
            os.environ[f"PONDER_{name.upper()}_DIR"] = str(root / name)
        work = root / "work"
        work.mkdir(exist_ok=True)
        if chdir:
            os.chdir(work)
        yield root
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


__all__ = ["CliResult", "isolated_user_dir", "plugin_set", "run_cli"]


def rlm_needle_script(needle: str = "MAGIC_PORT") -> tuple[str, str]:
    """Two replies for a scripted ``rlm`` root: the first searches the rendered context for lines
    holding ``needle`` (printing ``path:line code`` for each), the second asks a sub-model about
    the first hit with ``llm_query`` and submits its reply with the citation."""
    search = f'''```python
import re
path = None
found = []
for text in context.splitlines():
    m = re.match(r'=== (\\S+) \\(lines', text)
    if m:
        path = m.group(1)
    elif {needle!r} in text:
        number, _, code = text.partition('| ')
        found.append(path + ':' + number.strip() + ' ' + code)
print(found)
```'''
    submit = '''```python
reply = llm_query('Which port does this line set? ' + found[0])
SUBMIT(answer=reply + ' (' + found[0].split(' ')[0] + ')')
```'''
    return search, submit
