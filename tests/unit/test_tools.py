"""First-party tools (ponder.plugins.tools): bound to a Context, bounded, never raising."""

from __future__ import annotations

import os
import re

import pytest

from ponder.context.sources import Context, Document
from ponder.kernel.kinds import Tool
from ponder.plugins import tools
from ponder.testing import plugin_set
from ponder.testing.conformance import ToolConformance

SETTINGS = "HOST = 'localhost'\nDEBUG = False\nMAGIC_PORT = 48213\n"
APP = "import settings\n\n\ndef main():\n    return settings.MAGIC_PORT\n"


def make_context() -> Context:
    return Context([
        Document("config/settings.py", SETTINGS),
        Document("src/app.py", APP),
        Document("docs/notes.md", "Ports: see magic_port.\n" + "filler line\n" * 300),
        Document("patch.diff", "@@ -10,2 +10,2 @@\n-old\n+new\n", start_line=10),
    ])


@pytest.fixture
def bound() -> dict:
    return tools.bind_tools(make_context())


class _ToolConformance(ToolConformance):
    plugins = (tools,)

    def test_make_returns_a_documented_typed_callable(self) -> None:
        function = self.make().make(make_context())
        assert callable(function) and function.__name__ == self.name
        assert function.__doc__ and len(function.__doc__) > 40
        assert function.__annotations__.get("return") in ("str", str)


class TestSearchContextConformance(_ToolConformance):
    name = "search_context"


class TestReadLinesConformance(_ToolConformance):
    name = "read_lines"


class TestListFilesConformance(_ToolConformance):
    name = "list_files"


def test_registered_through_the_tool_hook() -> None:
    plugins = plugin_set(tools)
    assert sorted(plugins.registry("tool").names()) == ["list_files", "read_lines",
                                                        "search_context"]
    for name in ("search_context", "read_lines", "list_files"):
        entry = plugins.get("tool", name)
        assert entry.settings is None and isinstance(entry.factory(), Tool)


# --- search_context -------------------------------------------------------------------------
def test_search_returns_path_line_hits(bound) -> None:
    out = bound["search_context"]("MAGIC_PORT")
    lines = out.splitlines()
    assert lines[0] == "3 matches for 'MAGIC_PORT' in 3 files (showing 3):"
    assert "config/settings.py:3: MAGIC_PORT = 48213" in lines
    assert "src/app.py:5: return settings.MAGIC_PORT" in lines
    assert "docs/notes.md:1: Ports: see magic_port." in lines  # case-insensitive by default


def test_search_case_sensitive_regex_and_glob(bound) -> None:
    out = bound["search_context"]("MAGIC_PORT", ignore_case=False)
    assert "docs/notes.md" not in out and out.startswith("2 matches")
    out = bound["search_context"](r"PORT\s*=\s*(\d+)", regex=True)
    assert out.splitlines()[1:] == ["config/settings.py:3: MAGIC_PORT = 48213"]
    # without regex=True the pattern is literal text
    assert bound["search_context"](r"PORT\s*=").startswith("no matches for 'PORT\\\\s*='")
    out = bound["search_context"]("MAGIC_PORT", path_glob="src/*")
    assert out.splitlines()[1:] == ["src/app.py:5: return settings.MAGIC_PORT"]
    assert "no file matches path_glob 'lib/*'" in bound["search_context"]("x", path_glob="lib/*")


def test_search_line_numbers_follow_the_documents_start_line(bound) -> None:
    out = bound["search_context"]("+new")
    assert "patch.diff:12: +new" in out.splitlines()


def test_invalid_regex_is_a_message_not_an_exception(bound) -> None:
    out = bound["search_context"]("MAGIC_(PORT", regex=True)
    assert out.startswith("invalid regular expression 'MAGIC_(PORT'")
    assert "regex=false" in out
    assert bound["search_context"]("MAGIC_(PORT").startswith("no matches")  # literal is fine


def test_search_is_bounded(bound) -> None:
    out = bound["search_context"]("filler", max_hits=5)
    lines = out.splitlines()
    assert lines[0] == "300 matches for 'filler' in 1 file (showing 5):"
    assert len(lines) == 7 and lines[-1].startswith("[295 more not shown")
    assert lines[1] == "docs/notes.md:2: filler line"
    # max_hits is clamped to the hard cap, and the whole reply to MAX_OUTPUT_CHARS
    out = bound["search_context"]("filler", max_hits=10_000)
    assert "(showing 100)" in out and len(out) <= tools.MAX_OUTPUT_CHARS
    long_line = Context([Document("min.js", "x" * 50_000 + "\n")])
    out = tools.bind_tools(long_line)["search_context"]("x")
    assert len(out) < tools.MAX_HIT_CHARS + 100 and out.endswith("…")
    assert bound["search_context"]("") == "search_context needs a non-empty query."
    assert "at most 500" in bound["search_context"]("a" * 501)


def test_a_runaway_regex_stops_at_the_time_budget(monkeypatch) -> None:
    monkeypatch.setattr(tools, "SEARCH_TIME_BUDGET_S", 0.2)
    context = Context([Document("a.txt", "x" * 3000 + "\n")])
    out = tools.bind_tools(context)["search_context"](r"(x+x+)+y", regex=True)
    assert "[search stopped after 0.2s" in out


# --- read_lines ------------------------------------------------------------------------------
def test_read_lines_numbers_lines_like_chunks(bound) -> None:
    out = bound["read_lines"]("config/settings.py", 2, 3)
    assert out == ("=== config/settings.py (lines 2-3) ===\n"
                   "2| DEBUG = False\n"
                   "3| MAGIC_PORT = 48213")
    # start/end are clamped to the file; ./ prefixes are accepted
    assert bound["read_lines"]("./config/settings.py", -5, 99).startswith(
        "=== config/settings.py (lines 1-3) ===")
    diff = bound["read_lines"]("patch.diff")
    assert diff.startswith("=== patch.diff (lines 10-12) ===") and "\n12| +new" in diff


def test_read_lines_past_the_end_and_unknown_paths_explain(bound) -> None:
    assert bound["read_lines"]("src/app.py", 50) == \
        "src/app.py has lines 1-5; start=50 is past the end."
    out = bound["read_lines"]("settings.py")
    assert out.startswith("no file 'settings.py' in the context. Close paths: config/settings.py")
    assert "list_files" in out
    out = bound["read_lines"]("src/ap.py")
    assert "Close paths: src/app.py" in out
    assert "Close paths" not in bound["read_lines"]("zzzzzz.qqq")


def test_read_lines_is_bounded(bound) -> None:
    out = bound["read_lines"]("docs/notes.md", 1, 1000)
    numbered = [line for line in out.splitlines() if re.match(r"\s*\d+\| ", line)]
    assert len(numbered) == tools.MAX_READ_LINES
    assert out.splitlines()[-1] == ("[lines 1-200 of 1-301 shown; call read_lines with start=201 "
                                    "for more]")
    default = bound["read_lines"]("docs/notes.md", 10)
    assert "(lines 10-109)" in default.splitlines()[0]
    wide = Context([Document("w.txt", ("y" * 3000 + "\n") * 50)])
    out = tools.bind_tools(wide)["read_lines"]("w.txt", 1, 50)
    assert len(out) <= tools.MAX_OUTPUT_CHARS and "call read_lines with start=" in out


# --- list_files ------------------------------------------------------------------------------
def test_list_files_shows_paths_with_line_ranges_and_sizes(bound) -> None:
    out = bound["list_files"]()
    lines = out.splitlines()
    total = sum(len(d.text) for d in make_context().documents)
    assert lines[0] == f"4 files, {total:,} characters:"
    # a Python file also shows the module an import would name
    # (ponder.support.fileutils.path_to_module)
    assert (f"config/settings.py (module config.settings, lines 1-3, {len(SETTINGS)} chars)"
            in lines)
    assert any(line.startswith("patch.diff (lines 10-12,") for line in lines)
    assert bound["list_files"]("src/*").splitlines()[1:] == [
        f"src/app.py (module src.app, lines 1-5, {len(APP)} chars)"]
    assert bound["list_files"]("*.rs").startswith("no file matches '*.rs'; the context has 4")


def test_list_files_is_bounded() -> None:
    many = Context([Document(f"pkg/module_{i:04d}.py", "x = 1\n") for i in range(500)])
    out = tools.bind_tools(many)["list_files"]()
    lines = out.splitlines()
    assert lines[0] == "500 files, 3,000 characters:"
    assert lines[-1].startswith("[") and "more not shown" in lines[-1]
    assert len(lines) - 2 <= tools.MAX_LIST_FILES and len(out) <= tools.MAX_OUTPUT_CHARS


def test_tools_read_only_the_in_memory_documents(tmp_path, monkeypatch) -> None:
    """A path that exists on disk but not in the context is not read."""
    (tmp_path / "secret.txt").write_text("TOKEN=abc\n")
    monkeypatch.chdir(tmp_path)
    bound = tools.bind_tools(make_context())
    assert bound["read_lines"]("secret.txt").startswith("no file 'secret.txt'")
    assert bound["read_lines"](os.path.join(str(tmp_path), "secret.txt")).startswith("no file")
    assert bound["search_context"]("TOKEN").startswith("no matches")
    assert "secret" not in bound["list_files"]()


def test_tools_see_the_documents_of_the_context_they_were_bound_to() -> None:
    first = tools.bind_tools(Context([Document("a.txt", "alpha\n")]))
    second = tools.bind_tools(Context([Document("b.txt", "beta\n")]))
    assert "a.txt:1: alpha" in first["search_context"]("alpha")
    assert second["search_context"]("alpha").startswith("no matches")
    assert tools.bind_tools(Context([]))["list_files"]().startswith("no file matches '*'")


def test_dspy_can_describe_every_tool() -> None:
    import dspy

    for name, function in tools.bind_tools(make_context()).items():
        tool = dspy.Tool(function, name=name)
        assert tool.name == name and tool.desc
        assert set(tool.args) <= set(function.__code__.co_varnames)
    search = dspy.Tool(tools.bind_tools(make_context())["search_context"])
    assert search.args["query"]["type"] == "string"
    assert search.args["max_hits"]["type"] == "integer"
    assert "MAGIC_PORT = 48213" in search(query="magic_port =")
