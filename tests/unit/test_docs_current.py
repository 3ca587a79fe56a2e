"""The docs say what the program does (issue 15).

The tables that drift (plugins, strategies, hooks, config keys, plugin settings) are generated
by ``python -m ponder.cli.docgen``; these tests fail when one is stale, comparing with what is
registered *now*, so a new plugin only asks for that command to be run. They also check the
tables against their sources independently of the generator (the installed entry points, the
attrs classes), and run the error transcripts of docs/configuration.md.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import attrs
import pytest

from ponder.cli import docgen
from ponder.testing import run_cli

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "run `python -m ponder.cli.docgen` in the repository root"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return docgen.render_all()


def table_column(text: str, column: int = 0) -> list[str]:
    """The cells of one column of a Markdown table, backticks removed, header skipped."""
    cells = []
    for line in text.splitlines()[2:]:
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        cells.append(parts[column].strip("`"))
    return cells


def block(doc: str, name: str) -> str:
    found = docgen.blocks_in((DOCS / doc).read_text(encoding="utf-8"))
    assert name in found, f"docs/{doc} has no generated block {name!r}"
    return found[name]


@pytest.mark.parametrize(("name", "doc"), sorted(docgen.BLOCKS.items()))
def test_generated_block_is_current(rendered, name, doc):
    assert block(doc, name) == rendered[name], f"docs/{doc}: {name} table is stale; {REGENERATE}"


def test_usage_plugin_table_lists_every_first_party_entry_point():
    """Independent of the generator: the installed entry points of the `ponder` distribution."""
    installed = sorted(ep.name for ep in metadata.entry_points(group="ponder")
                       if ep.dist is not None and ep.dist.metadata["Name"] == "ponder")
    assert installed, "no entry points: is ponder installed (pip install -e .)?"
    assert sorted(table_column(block("usage.md", "plugins"))) == installed, REGENERATE


def test_usage_strategy_table_lists_every_registered_strategy():
    plugins = docgen.first_party_plugins()
    names = table_column(block("usage.md", "strategies"))
    assert "retrieve_then_read" in names
    assert sorted(names) == sorted(plugins.strategies.names()), REGENERATE


def test_config_key_table_matches_the_attrs_classes():
    from ponder.kernel.config import KERNEL_SECTIONS

    keys = table_column(block("configuration.md", "config-keys"))
    expected = [f"{section}.{field.name}" for section, cls in KERNEL_SECTIONS.items()
                for field in attrs.fields(cls)]
    assert keys == expected, REGENERATE


def test_hooks_table_names_every_hook():
    from ponder.kernel.hookspecs import ALL_KIND_HOOKS

    hooks = table_column(block("writing-plugins.md", "hooks"))
    assert hooks == [*ALL_KIND_HOOKS.values(), "ponder_register_commands"], REGENERATE
    assert "put_record(namespace, key, record)" in block("writing-plugins.md", "hooks")


def test_the_generator_check_mode_reports_a_stale_block(tmp_path, rendered):
    for doc in set(docgen.BLOCKS.values()):
        (tmp_path / doc).write_text((DOCS / doc).read_text(encoding="utf-8"), encoding="utf-8")
    assert docgen.main(["--docs", str(tmp_path), "--check"]) == 0
    usage = tmp_path / "usage.md"
    usage.write_text(usage.read_text().replace("| `rlm` |", "| `rlm-old` |", 1))
    assert docgen.stale_blocks(tmp_path, rendered) == ["usage.md: plugins"]
    assert docgen.main(["--docs", str(tmp_path)]) == 0  # rewrites the block…
    assert docgen.stale_blocks(tmp_path, rendered) == []  # …and nothing else drifts


# --- the transcripts in configuration.md ----------------------------------------------------
TRANSCRIPT = re.compile(r"```console\n\$ cat ponder\.toml\n(?P<toml>.*?)\$ ponder (?P<args>[^\n]+)"
                        r"\n(?P<out>.*?)```", re.S)


def transcripts() -> list[tuple[str, str, str]]:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    return [(m.group("toml"), m.group("args"), m.group("out")) for m in TRANSCRIPT.finditer(text)]


def test_configuration_md_has_transcripts():
    assert len(transcripts()) >= 6


@pytest.mark.parametrize(("toml", "args", "out"), transcripts())
def test_configuration_md_error_example_reproduces(tmp_path, monkeypatch, toml, args, out):
    (tmp_path / "ponder.toml").write_text(toml, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PONDER_DOCS_UNSET_KEY", raising=False)
    result = run_cli(args.split())
    assert result.exit_code == 2, result.output
    for line in out.strip().splitlines():
        expected = line.split("…")[0]
        assert any(got.startswith(expected) if "…" in line else got == expected
                   for got in result.stderr.splitlines()), (line, result.stderr)
