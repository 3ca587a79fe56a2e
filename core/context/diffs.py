"""Git diffs: a unified diff, or ``git diff REV`` run here, as one ``Document`` per changed file.

Reviewing a change is a different load from reading a tree: the text comes from git (or from a
diff the user pastes), not from the file system, and a document is a file's hunks rather than
the file, with line numbers anchored to the new file. Parsing that text (git's and ``diff -u``'s
headers, C-quoted paths, truncated hunks) is self-contained, so it lives here; it shares only the
data model and the UTF-8 decoding with the other loaders.
"""

from __future__ import annotations

import os
import re
import subprocess

import attrs

from ponder.context.documents import (
    Context,
    Document,
    EmptyContextError,
    SkippedSource,
    SourceError,
)
from ponder.context.reading import decode_text

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def load_git_diff(
    *, rev: str | None = None, text: str | None = None, cwd: str | os.PathLike[str] | None = None
) -> Context:
    """One Document per file changed in a unified diff: ``text``, or ``git diff REV`` run in
    ``cwd`` (REV defaults to ``HEAD``: staged and unstaged changes to tracked files).

    A document's path is the new (``b/``) path (the old one for a deletion), its text is the
    file's hunks with their ``@@`` headers, and its language is ``"diff"``. ``start_line`` is
    the first hunk's start in the new file, so chunk line numbers count *diff lines* from there:
    they match the new file only up to the first removed line or second hunk. The ``@@``
    headers carry the exact positions; prompts over diffs should cite from them.
    Binary changes and pure renames are listed in ``skipped``.
    """
    if text is not None and rev is not None:
        raise ValueError("give either rev or text, not both")
    if text is None:
        rev = rev or "HEAD"
        text = _git_diff(rev, cwd)
        source = f"git diff {rev}"
    else:
        source = "<diff>"
    documents, skipped = parse_unified_diff(text)
    if not documents:
        detail = f"{len(skipped)} files without textual changes" if skipped else "no changes"
        raise EmptyContextError(f"nothing readable in {source} ({detail})")
    return Context(documents, skipped, [source])


def _git_diff(rev: str, cwd: str | os.PathLike[str] | None) -> str:
    if rev.startswith("-"):
        raise SourceError(f"not a git revision: '{rev}'")
    if cwd is not None and not os.path.isdir(cwd):
        raise SourceError(f"no such file or directory: '{os.fspath(cwd)}'")
    command = [
        "git",
        "-c",
        "core.quotepath=off",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--src-prefix=a/",  # whatever diff.noprefix / diff.mnemonicPrefix say
        "--dst-prefix=b/",
        rev,
        "--",
    ]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise SourceError("git diff needs git, which is not installed or not on PATH") from None
    except OSError as error:
        raise SourceError(f"could not run git: {error}") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[0] if lines else f"exit status {done.returncode}"
        raise SourceError(f"git diff {rev} failed: {why}")
    return decode_text(done.stdout)[0]


@attrs.define
class _FileDiff:
    old: str | None = None
    new: str | None = None
    lines: list[str] = attrs.Factory(list)
    first_new: int | None = None
    binary: bool = False

    def path(self) -> str:
        return self.new or self.old or "<unknown>"


def parse_unified_diff(text: str) -> tuple[list[Document], list[SkippedSource]]:
    """Split a unified diff (git's or ``diff -u``'s) into one Document per file; see
    ``load_git_diff``. Text around the file sections (a commit message, ``index`` lines) is
    ignored."""
    documents: list[Document] = []
    skipped: list[SkippedSource] = []
    files: list[_FileDiff] = []
    current: _FileDiff | None = None
    old_left = new_left = 0  # lines still expected in the current hunk
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag in (" ", ""):  # "" : a context line whose space an editor stripped
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                old_left -= 1
            elif tag == "+":
                new_left -= 1
            elif tag != "\\":  # a truncated hunk: read this line as a header
                old_left = new_left = 0
            if old_left > 0 or new_left > 0 or tag in (" ", "", "-", "+", "\\"):
                assert current is not None
                current.lines.append(line)
                continue
        if line.startswith("diff --git "):
            current = _FileDiff(new=_git_header_path(line))
            files.append(current)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            if current is None or current.lines or current.first_new is not None:
                current = _FileDiff()  # `diff -u` output: no `diff --git` line per file
                files.append(current)
            current.old = _diff_path(line[4:], "a/")
        elif line.startswith("+++ ") and current is not None:
            current.new = _diff_path(line[4:], "b/")
        elif line.startswith("@@") and current is not None and (match := _HUNK.match(line)):
            old_left = int(match[2]) if match[2] is not None else 1
            new_left = int(match[4]) if match[4] is not None else 1
            if current.first_new is None:
                current.first_new = int(match[3])
            current.lines.append(line)
        elif line.startswith("\\") and current is not None and current.lines:
            current.lines.append(line)  # "\ No newline at end of file" after a hunk's last line
        elif current is not None and (
            line.startswith("Binary files ") or line.startswith("GIT binary patch")
        ):
            current.binary = True
        elif line.startswith("rename to ") and current is not None:
            current.new = _diff_path(line[len("rename to ") :], "")
    for diff in files:
        if diff.lines:
            start = max(1, diff.first_new or 1)
            body = "\n".join(diff.lines) + "\n"
            documents.append(Document(diff.path(), body, start, "diff"))
        else:
            reason = "binary file" if diff.binary else "no textual changes (rename or mode)"
            skipped.append(SkippedSource(diff.path(), reason))
    return documents, skipped


def _diff_path(raw: str, prefix: str) -> str | None:
    """A path from a ``---``/``+++`` line: unquoted, without timestamp and ``a/``/``b/``."""
    raw = raw.rstrip("\n")
    if raw.startswith('"'):
        raw = _unquote(raw)
    elif "\t" in raw:
        raw = raw.split("\t", 1)[0]  # `diff -u` appends a tab and a timestamp
    if raw == "/dev/null":
        return None
    return raw[len(prefix) :] if prefix and raw.startswith(prefix) else raw


def _git_header_path(line: str) -> str | None:
    """The b/ path of a ``diff --git a/X b/Y`` line (used when no ``+++`` line follows)."""
    rest = line[len("diff --git ") :]
    if rest.endswith('"'):
        start = rest.rfind(' "')
        return _diff_path(rest[start + 1 :], "b/") if start != -1 else None
    cut = rest.rfind(" b/")
    return rest[cut + 3 :] if cut != -1 else None


_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_OCTAL = re.compile(r"[0-7]{3}")


def _unquote(quoted: str) -> str:
    """Undo git's C-style quoting of a path (``"a/tab\\there"``, octal escapes for bytes)."""
    end = quoted.rfind('"')
    inner = quoted[1:end] if end > 0 else quoted[1:]
    out = bytearray()
    i = 0
    while i < len(inner):
        char = inner[i]
        if char == "\\" and i + 1 < len(inner):
            if _OCTAL.match(inner, i + 1):
                out.append(int(inner[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            if inner[i + 1] in _ESCAPES:
                out.append(_ESCAPES[inner[i + 1]])
                i += 2
                continue
        out += char.encode("utf-8", "surrogatepass")
        i += 1
    return out.decode("utf-8", "replace")
