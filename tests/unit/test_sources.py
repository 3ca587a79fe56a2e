"""Loading sources: walks, ignore rules, filters, bad files, stdin and git diffs."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ponder.context import sources
from ponder.context.sources import (
    SKIPPED_DIRS,
    Context,
    Document,
    EmptyContextError,
    SkippedSource,
    SourceError,
    guess_language,
    load_git_diff,
    load_sources,
    parse_unified_diff,
)
from ponder.errors import PonderError


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def paths(context: Context) -> list[str]:
    return [document.path for document in context.documents]


def reasons(context: Context) -> dict[str, str]:
    return {skipped.path: skipped.reason for skipped in context.skipped}


# -- walking --------------------------------------------------------------------------------------


def test_directory_is_walked_in_sorted_order_with_relative_paths(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "proj", {"b.py": "b\n", "a/z.md": "z\n", "a.txt": "a\n", "a/b/c.go": "c"}
    )
    context = load_sources([str(root)])
    assert paths(context) == ["a/b/c.go", "a/z.md", "a.txt", "b.py"]
    assert [d.language for d in context.documents] == ["go", "markdown", "text", "python"]
    assert context.sources == [str(root)]
    assert context.skipped == []


def test_several_directories_keep_their_names(tmp_path: Path, monkeypatch) -> None:
    tree(tmp_path, {"src/__init__.py": "x = 1\n", "tests/__init__.py": "y = 2\n", "one.py": "1\n"})
    monkeypatch.chdir(tmp_path)
    context = load_sources(["./src", "tests", "one.py"])
    assert paths(context) == ["src/__init__.py", "tests/__init__.py", "one.py"]


def test_file_met_twice_loads_once(tmp_path: Path) -> None:
    root = tree(tmp_path, {"src/pkg/a.py": "a\n"})
    context = load_sources(
        [str(root / "src"), str(root / "src" / "pkg"), str(root / "src/pkg/a.py")]
    )
    assert len(context) == 1


def test_default_skips(tmp_path: Path) -> None:
    files = {f"{name}/x.py": "skip\n" for name in SKIPPED_DIRS - {".git"}}
    files |= {
        ".git/config": "skip\n",
        "pkg.egg-info/PKG-INFO": "skip\n",
        "env/pyvenv.cfg": "home = /usr\n",
        "env/lib/site.py": "skip\n",
        "myvenv/pyvenv.cfg": "home = /usr\n",
        "env2/keep.py": "keep\n",  # no pyvenv.cfg: an ordinary directory
        "src/node_modules/lib.js": "skip\n",
        "src/keep.py": "keep\n",
    }
    context = load_sources([str(tree(tmp_path, files))])
    assert paths(context) == ["env2/keep.py", "src/keep.py"]


def test_named_skipped_directory_is_still_read(tmp_path: Path) -> None:
    tree(tmp_path, {"build/gen.py": "g\n"})
    assert paths(load_sources([str(tmp_path / "build")])) == ["gen.py"]


# -- .gitignore -----------------------------------------------------------------------------------


def test_gitignore_at_every_level(tmp_path: Path) -> None:
    files = {
        ".gitignore": "*.log\nsecret/\n/top_only.txt\n",
        "app.log": "x",
        "keep.py": "k",
        "top_only.txt": "x",
        "secret/a.py": "x",
        "sub/top_only.txt": "kept: the pattern is anchored to the root",
        "sub/.gitignore": "!important.log\n*.tmp\n",
        "sub/important.log": "kept by negation in a deeper file",
        "sub/other.log": "x",
        "sub/scratch.tmp": "x",
        "sub/deeper/more.tmp": "x",
        "sub/deeper/ok.py": "k",
    }
    context = load_sources([str(tree(tmp_path, files))])
    assert paths(context) == [
        ".gitignore",
        "keep.py",
        "sub/.gitignore",
        "sub/deeper/ok.py",
        "sub/important.log",
        "sub/top_only.txt",
    ]
    everything = load_sources([str(tmp_path)], respect_gitignore=False)
    assert len(everything) == len(files)


def test_git_info_exclude_and_repository_rules_above_the_directory(tmp_path: Path) -> None:
    files = {
        ".git/info/exclude": "*.local\n",
        ".gitignore": "*.gen.py\ngenerated/\n",
        "src/a.py": "a",
        "src/a.gen.py": "x",
        "src/b.local": "x",
        "generated/out.py": "o",
    }
    tree(tmp_path, files)
    assert paths(load_sources([str(tmp_path)])) == [".gitignore", "src/a.py"]
    # Rules from the repository's top apply below it...
    assert paths(load_sources([str(tmp_path / "src")])) == ["a.py"]
    # ...but a directory the user names is read even when git ignores it.
    assert paths(load_sources([str(tmp_path / "generated")])) == ["out.py"]


# -- include / exclude ----------------------------------------------------------------------------


def test_include_and_exclude(tmp_path: Path) -> None:
    files = {"src/a.py": "a", "src/b.md": "b", "tests/test_a.py": "t", "docs/x.py": "x"}
    root = str(tree(tmp_path, files))
    assert paths(load_sources([root], include=["*.py"])) == [
        "docs/x.py",
        "src/a.py",
        "tests/test_a.py",
    ]
    assert paths(load_sources([root], include=["*.py"], exclude=["tests/", "docs/x.py"])) == [
        "src/a.py"
    ]
    assert paths(load_sources([root], exclude=["*.md"])) == [
        "docs/x.py",
        "src/a.py",
        "tests/test_a.py",
    ]
    with pytest.raises(EmptyContextError, match="no files left"):
        load_sources([root], include=["*.rs"])


# -- bad files ------------------------------------------------------------------------------------


def test_binary_files_are_skipped(tmp_path: Path) -> None:
    files = {
        "a.bin": b"\x00\x01\x02",
        "logo.png": b"not really a png",
        "late.dat": b"x" * 9000 + b"\0",
    }
    context = load_sources([str(tree(tmp_path, files))])
    assert paths(context) == ["late.dat"]  # the NUL is past the first 8 KB
    assert reasons(context) == {"a.bin": "binary file", "logo.png": "binary file"}
    assert all(s.kind == "skipped" for s in context.skipped)


def test_invalid_utf8_is_repaired_loaded_and_listed(tmp_path: Path) -> None:
    tree(tmp_path, {"latin1.txt": b"caf\xe9 ok\n\xff\xfe\n", "fine.txt": "caf\u00e9 \ufffd\n"})
    context = load_sources([str(tmp_path)])
    assert paths(context) == ["fine.txt", "latin1.txt"]
    assert context.documents[1].text == "caf\ufffd ok\n\ufffd\ufffd\n"
    assert context.skipped == [
        SkippedSource("latin1.txt", "not valid UTF-8: repaired 3 bytes", kind="repaired")
    ]


def test_bom_and_crlf_are_normalised(tmp_path: Path) -> None:
    tree(tmp_path, {"w.txt": b"\xef\xbb\xbfline 1\r\nline 2\r\n"})
    assert load_sources([str(tmp_path)]).documents[0].text == "line 1\nline 2\n"


def test_oversized_files_are_skipped(tmp_path: Path) -> None:
    tree(tmp_path, {"big.txt": "x" * 150, "small.txt": "y" * 100})
    context = load_sources([str(tmp_path)], max_file_bytes=100)
    assert paths(context) == ["small.txt"]
    assert reasons(context) == {"big.txt": "larger than 100 bytes limit (150 bytes)"}
    assert sources._too_large(5_100_000, 2_000_000) == "larger than 2 MB limit (5.1 MB)"
    assert sources._too_large(2_000_010, 2_000_000) == "larger than 2 MB limit (2,000,010 bytes)"


def test_empty_files_are_left_out_silently(tmp_path: Path) -> None:
    tree(tmp_path, {"empty.py": "", "a.py": "a"})
    context = load_sources([str(tmp_path)])
    assert paths(context) == ["a.py"]
    assert context.skipped == []
    with pytest.raises(EmptyContextError, match=r"\(1 empty file\)"):
        load_sources([str(tmp_path / "empty.py")])


def test_unreadable_file_and_directory_via_permission_error(tmp_path: Path, monkeypatch) -> None:
    # Works as root too, where chmod 000 does not stop reads.
    tree(tmp_path, {"locked.txt": "secret", "closed/inside.txt": "x", "open.txt": "fine"})
    real_open, real_scandir = open, os.scandir

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def fake_scandir(path):
        if str(path).endswith("closed"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(sources, "open", fake_open, raising=False)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    context = load_sources([str(tmp_path)])
    assert paths(context) == ["open.txt"]
    assert reasons(context) == {"closed": "permission denied", "locked.txt": "permission denied"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_and_directory_via_chmod(tmp_path: Path) -> None:
    tree(tmp_path, {"locked.txt": "secret", "closed/inside.txt": "x", "open.txt": "fine"})
    (tmp_path / "locked.txt").chmod(0)
    (tmp_path / "closed").chmod(0)
    try:
        context = load_sources([str(tmp_path)])
    finally:
        (tmp_path / "locked.txt").chmod(0o644)
        (tmp_path / "closed").chmod(0o755)
    assert paths(context) == ["open.txt"]
    assert reasons(context) == {"closed": "permission denied", "locked.txt": "permission denied"}


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks_loops_broken_and_outside(tmp_path: Path) -> None:
    root = tree(tmp_path / "root", {"a/real.py": "r\n", "b.py": "b\n"})
    outside = tree(tmp_path / "elsewhere", {"secret.txt": "s\n"})
    (root / "a" / "loop").symlink_to(root)  # back to an ancestor
    (root / "self").symlink_to(root / "self")  # a link to itself
    (root / "dead").symlink_to(root / "missing.py")
    (root / "out_dir").symlink_to(outside)
    (root / "out_file.txt").symlink_to(outside / "secret.txt")
    (root / "alias.py").symlink_to(root / "b.py")  # inside: loads, once
    context = load_sources([str(root)])
    assert paths(context) == ["a/real.py", "alias.py"]
    assert reasons(context) == {
        "a/loop": "symlink loop",
        "self": "symlink loop",
        "dead": "broken symlink",
        "out_dir": "symlink points outside the source root",
        "out_file.txt": "symlink points outside the source root",
    }


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_not_read(tmp_path: Path) -> None:
    tree(tmp_path, {"a.py": "a"})
    os.mkfifo(tmp_path / "pipe")
    context = load_sources([str(tmp_path)])  # opening the FIFO would block forever
    assert reasons(context) == {"pipe": "not a regular file"}


def test_nothing_readable_says_why(tmp_path: Path) -> None:
    files = {f"{c}.bin": b"\0" for c in "abcd"}
    with pytest.raises(EmptyContextError) as caught:
        load_sources([str(tree(tmp_path, files))])
    assert str(caught.value) == (
        "nothing readable in the given sources "
        "(4 skipped: a.bin: binary file, b.bin: binary file, c.bin: binary file, …)"
    )
    assert isinstance(caught.value, SourceError)
    assert isinstance(caught.value, PonderError)
    assert caught.value.exit_code == 2


# -- paths that are not there ---------------------------------------------------------------------


def test_missing_path_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tree(tmp_path, {"a.py": "a"})
    with pytest.raises(SourceError) as caught:
        load_sources(["a.py", "nope/missing.py"])
    assert str(caught.value) == "no such file or directory: 'nope/missing.py'"


def test_glob_expansion_and_no_match(tmp_path: Path, monkeypatch) -> None:
    files = {
        "src/a.py": "a",
        "src/pkg/b.py": "b",
        "src/pkg/c.txt": "c",
        "src/node_modules/d.py": "d",
        "src/.gitignore": "gen_*.py\n",
        "src/gen_e.py": "e",
    }
    tree(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    assert paths(load_sources(["src/**/*.py"])) == ["src/a.py", "src/pkg/b.py"]
    assert paths(load_sources(["src/**/*.py"], respect_gitignore=False)) == [
        "src/a.py",
        "src/gen_e.py",
        "src/pkg/b.py",
    ]
    with pytest.raises(SourceError) as caught:
        load_sources(["src/**/*.rs"])
    assert str(caught.value) == "no files match 'src/**/*.rs'"


def test_empty_path_list_is_empty_context() -> None:
    with pytest.raises(EmptyContextError):
        load_sources([])


# -- stdin ----------------------------------------------------------------------------------------


def test_stdin_text_stream() -> None:
    context = load_sources(["-"], stdin=io.StringIO("hello\nworld\n"))
    assert context.documents == [Document("<stdin>", "hello\nworld\n")]
    assert context.documents[0].language is None


def test_stdin_bytes_are_repaired(tmp_path: Path) -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"ok \xff\n"), encoding="utf-8")
    context = load_sources(["-"], stdin=stream)
    assert context.documents[0].text == "ok \ufffd\n"
    assert context.skipped[0].kind == "repaired"


def test_stdin_and_files_together(tmp_path: Path) -> None:
    tree(tmp_path, {"a.py": "a"})
    context = load_sources([str(tmp_path / "a.py"), "-"], stdin=io.StringIO("x"))
    assert [d.path for d in context.documents] == [f"{tmp_path}/a.py", "<stdin>"]


# -- the Context ----------------------------------------------------------------------------------


def test_context_sizes_and_digest() -> None:
    one = Context([Document("a.py", "abcde"), Document("b.py", "xyz")])
    assert len(one) == 2
    assert one.total_chars == 8
    assert one.estimated_tokens == 2
    assert one.digest() == Context([Document("a.py", "abcde"), Document("b.py", "xyz")]).digest()
    assert len(one.digest()) == 64
    others = [
        Context([Document("a.py", "abcd"), Document("eb.py", "xyz")]),  # same bytes, moved
        Context([Document("a.py", "abcde"), Document("b.py", "xyz", start_line=2)]),
        Context([Document("b.py", "xyz"), Document("a.py", "abcde")]),
    ]
    assert len({one.digest(), *(c.digest() for c in others)}) == 4


def test_guess_language() -> None:
    assert guess_language("src/App.TSX") == "typescript"
    assert guess_language("Makefile") == "make"
    assert guess_language("lib/x.rs") == "rust"
    assert guess_language("README") is None
    assert Document("x.c", "").language == "c"
    assert Document("x.c", "", language=None).language is None


# -- diffs ----------------------------------------------------------------------------------------

GIT_DIFF = """\
diff --git a/src/app.py b/src/app.py
index 83db48f..bf269f4 100644
--- a/src/app.py
+++ b/src/app.py
@@ -10,7 +10,8 @@ def main():
     a = 1
-    b = 2
+    b = 3
+    c = 4
     return a
--- not a header, a removed line that starts with dashes
     x
@@ -40,3 +41,3 @@ class App:
-    old
+    new
\\ No newline at end of file
diff --git a/new.txt b/new.txt
new file mode 100644
index 0000000..3b18e51
--- /dev/null
+++ b/new.txt
@@ -0,0 +1,2 @@
+hello
+world
diff --git a/gone.md b/gone.md
deleted file mode 100644
index 3b18e51..0000000
--- a/gone.md
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/logo.png b/logo.png
index 1111111..2222222 100644
Binary files a/logo.png and b/logo.png differ
diff --git a/old_name.py b/new_name.py
similarity index 100%
rename from old_name.py
rename to new_name.py
diff --git "a/with\\ttab.txt" "b/with\\ttab.txt"
index 1..2 100644
--- "a/with\\ttab.txt"
+++ "b/with\\ttab.txt"
@@ -1 +1 @@
-a
+b
"""


def test_parse_git_diff() -> None:
    documents, skipped = parse_unified_diff(GIT_DIFF)
    assert [(d.path, d.start_line) for d in documents] == [
        ("src/app.py", 10),
        ("new.txt", 1),
        ("gone.md", 1),
        ("with\ttab.txt", 1),
    ]
    app = documents[0]
    assert app.language == "diff"
    assert app.text.startswith("@@ -10,7 +10,8 @@ def main():\n     a = 1\n")
    assert "--- not a header" in app.text
    assert app.text.endswith("+    new\n\\ No newline at end of file\n")
    assert documents[1].text == "@@ -0,0 +1,2 @@\n+hello\n+world\n"
    assert skipped == [
        SkippedSource("logo.png", "binary file"),
        SkippedSource("new_name.py", "no textual changes (rename or mode)"),
    ]


def test_parse_plain_diff_u() -> None:
    text = (
        "--- old/a.c\t2024-01-01 00:00:00\n+++ new/a.c\t2024-01-02 00:00:00\n"
        "@@ -3,2 +3,2 @@\n int x;\n-int y;\n+long y;\n"
        "--- old/b.c\t2024-01-01\n+++ new/b.c\t2024-01-02\n@@ -1 +1 @@\n-1\n+2\n"
    )
    documents, _ = parse_unified_diff(text)
    assert [(d.path, d.start_line, d.text.count("\n")) for d in documents] == [
        ("new/a.c", 3, 4),
        ("new/b.c", 1, 3),
    ]


def test_diff_from_text_and_empty_diff() -> None:
    context = load_git_diff(text=GIT_DIFF)
    assert context.sources == ["<diff>"]
    assert len(context) == 4
    with pytest.raises(EmptyContextError, match="no changes"):
        load_git_diff(text="")
    with pytest.raises(ValueError):
        load_git_diff(text="", rev="HEAD")


def _git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_diff_from_a_real_repository(tmp_path: Path) -> None:
    tree(tmp_path, {"app.py": "".join(f"line {i}\n" for i in range(1, 31)), "other.txt": "o\n"})
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    lines = (tmp_path / "app.py").read_text().splitlines(keepends=True)
    lines[19] = "line twenty, changed\n"
    (tmp_path / "app.py").write_text("".join(lines))
    (tmp_path / "other.txt").write_text("staged\n")
    _git(tmp_path, "add", "other.txt")

    context = load_git_diff(cwd=tmp_path)  # HEAD: staged and unstaged
    assert context.sources == ["git diff HEAD"]
    assert [(d.path, d.start_line) for d in context.documents] == [("app.py", 17), ("other.txt", 1)]
    assert "+line twenty, changed" in context.documents[0].text

    with pytest.raises(SourceError, match="git diff nope failed"):
        load_git_diff(rev="nope", cwd=tmp_path)
    with pytest.raises(SourceError, match="not a git revision"):
        load_git_diff(rev="--output=/tmp/x", cwd=tmp_path)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_diff_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="git diff HEAD failed"):
        load_git_diff(cwd=tmp_path)


def test_git_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SourceError, match="not installed"):
        load_git_diff(cwd=tmp_path)
