"""Small, portable file helpers: atomic writes, per-user dirs, linking, syncing."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

StrPath = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_output(
    path: StrPath, *, suffix: str = ".tmp", keep_mode: bool = True
) -> Iterator[BinaryIO]:
    """A binary file whose bytes replace ``path`` only when the ``with`` block ends cleanly, so
    readers see the old file or the new one, never half; on any error the temp file is removed.

    The temp file lives in the same directory because ``os.replace`` is only atomic within one
    filesystem; parent directories are created. ``keep_mode``: a replaced file keeps its mode.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}{suffix}"
    # os.open with 0o666 lets the umask decide the mode, as for a plain open() (mkstemp's
    # 0o600 would silently make every rewritten file private)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if keep_mode and target.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))  # keep the file's own mode
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        # never leave a stray temp file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: StrPath, content: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``content`` to ``path`` so readers see the old file or the new one, never half
    (through :func:`atomic_output`; the file keeps its mode). Returns the path written."""
    data = content.encode(encoding) if isinstance(content, str) else bytes(content)
    with atomic_output(path) as fh:
        fh.write(data)
    return Path(path)


def _user_dir(env_var: str, platform_fn_name: str, parts: tuple[str, ...], create: bool) -> Path:
    override = os.environ.get(env_var)
    if override:
        base = Path(override).expanduser()
    else:
        import platformdirs  # only needed when no override is set

        base = Path(getattr(platformdirs, platform_fn_name)("ponder"))
    path = base.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def get_cache_dir(*parts: str) -> Path:
    """The cache directory (``$PONDER_CACHE_DIR`` or the per-user one), joined with ``parts``.

    Created if missing.
    """
    return _user_dir("PONDER_CACHE_DIR", "user_cache_dir", parts, create=True)


def get_data_dir(*parts: str) -> Path:
    """The data directory (``$PONDER_DATA_DIR`` or the per-user one); created if missing."""
    return _user_dir("PONDER_DATA_DIR", "user_data_dir", parts, create=True)


def get_config_dir() -> Path:
    """The config directory (``$PONDER_CONFIG_DIR`` or the per-user one); not created."""
    return _user_dir("PONDER_CONFIG_DIR", "user_config_dir", (), create=False)


def smart_link(source: StrPath, target: StrPath) -> str:
    """Link ``target`` to ``source``: symlink, else hardlink, else copy.

    Returns the method used: ``"symlink"``, ``"hardlink"`` or ``"copy"``. An existing
    ``target`` is an error (we never silently replace a user's file).
    """
    src = Path(source)
    dst = Path(target)
    if not src.exists():
        raise FileNotFoundError(f"cannot link to {src}: it does not exist")
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(f"cannot link {dst}: it already exists")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())
        return "symlink"
    except (OSError, NotImplementedError):
        pass  # e.g. Windows without developer mode
    if src.is_file():
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass  # e.g. across filesystems
        shutil.copy2(src, dst)
    else:
        shutil.copytree(src, dst)
    return "copy"


def _make_writable_and_retry(func: Callable[..., Any], path: str, _exc: Any) -> None:
    # read-only entries (git objects, Windows attributes) make rmtree fail: clear and retry
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWRITE | stat.S_IEXEC | stat.S_IREAD)
    os.chmod(path, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
    func(path)


def smart_rmtree(path: StrPath, aggressive: bool = False) -> None:
    """Remove a directory tree (or a file/link); no error if it is missing.

    With ``aggressive``, read-only entries are made writable and removal is retried.
    """
    p = Path(path)
    if p.is_symlink() or p.is_file():
        try:
            p.unlink()
        except PermissionError:
            if not aggressive:
                raise
            os.chmod(p, stat.S_IWRITE | stat.S_IREAD)
            p.unlink()
        return
    if not p.exists():
        return
    if not aggressive:
        shutil.rmtree(p)
    elif sys.version_info >= (3, 12):
        shutil.rmtree(p, onexc=_make_writable_and_retry)
    else:  # onerror is deprecated from 3.12 on
        shutil.rmtree(p, onerror=_make_writable_and_retry)


def sync_directory(source: StrPath, target: StrPath, *, delete: bool = False) -> dict[str, int]:
    """Make ``target`` mirror ``source`` in pure Python (no rsync/robocopy needed).

    Files are copied when missing or when size or mtime differ. With ``delete``, files and
    directories in ``target`` that are not in ``source`` are removed. Returns counts
    ``{"copied", "skipped", "deleted"}``.
    """
    src = Path(source)
    dst = Path(target)
    if not src.is_dir():
        raise NotADirectoryError(f"sync source {src} is not a directory")
    dst.mkdir(parents=True, exist_ok=True)
    counts = {"copied": 0, "skipped": 0, "deleted": 0}
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(src)
        (dst / rel_dir).mkdir(parents=True, exist_ok=True)
        seen.add(rel_dir)
        for name in sorted(filenames):
            rel = rel_dir / name
            seen.add(rel)
            s, d = src / rel, dst / rel
            if d.is_file() and not d.is_symlink():
                ss, ds = s.stat(), d.stat()
                # copy2 preserves mtime, so equal size+mtime means "already synced"
                if ss.st_size == ds.st_size and int(ss.st_mtime) == int(ds.st_mtime):
                    counts["skipped"] += 1
                    continue
            elif d.exists() or d.is_symlink():
                smart_rmtree(d)
            shutil.copy2(s, d)
            counts["copied"] += 1
    if delete:
        # deepest first so a directory is emptied before we look at it
        for dirpath, dirnames, filenames in os.walk(dst, topdown=False):
            rel_dir = Path(dirpath).relative_to(dst)
            for name in filenames + dirnames:
                rel = rel_dir / name
                if rel in seen:
                    continue
                p = dst / rel
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                counts["deleted"] += 1
    return counts


def path_to_module(path: StrPath, root: StrPath | None = None) -> str:
    """Turn a ``.py`` path into a dotted module name.

    ``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``. With ``root``, the
    path is taken relative to it (absolute paths need a root).
    """
    p = Path(path)
    if p.suffix != ".py":
        raise ValueError(f"not a Python source file (expected a .py path): {path}")
    if root is not None:
        try:
            p = p.resolve().relative_to(Path(root).resolve())
        except ValueError:
            raise ValueError(f"{path} is not inside {root}") from None
    elif p.is_absolute():
        raise ValueError(f"absolute path {path} needs a root to be turned into a module name")
    parts = list(p.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    parts = [part for part in parts if part not in ("", ".")]
    if not parts:
        raise ValueError(f"cannot make a module name from {path}")
    bad = [part for part in parts if not part.isidentifier()]
    if bad:
        raise ValueError(f"cannot make a module name from {path}: {bad[0]!r} is not an identifier")
    return ".".join(parts)
