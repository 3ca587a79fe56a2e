"""ponder.support.fileutils: atomic writes, per-user dirs, linking, removal, syncing, module
names."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs
import pytest

from ponder.support import fileutils
from ponder.support.fileutils import (
    atomic_write,
    get_cache_dir,
    get_config_dir,
    get_data_dir,
    path_to_module,
    smart_link,
    smart_rmtree,
    sync_directory,
)

# -- atomic_write ------------------------------------------------------------------------------


def test_atomic_write_text_bytes_and_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    assert atomic_write(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(target, "x", encoding="utf-16")
    assert target.read_bytes() == "x".encode("utf-16")
    assert os.listdir(target.parent) == ["file.txt"]


def test_atomic_write_keeps_mode_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    atomic_write(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    assert target.read_text() == "new"


def test_atomic_write_failure_keeps_old_content_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "data.json"
    target.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(fileutils.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["data.json"]


# -- directories ---------------------------------------------------------------------------------


def test_dirs_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PONDER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PONDER_CONFIG_DIR", str(tmp_path / "config"))
    assert get_cache_dir() == tmp_path / "cache"
    assert get_cache_dir("batches", "x") == tmp_path / "cache" / "batches" / "x"
    assert (tmp_path / "cache" / "batches" / "x").is_dir()
    assert get_data_dir("runs") == tmp_path / "data" / "runs"
    assert (tmp_path / "data" / "runs").is_dir()
    assert get_config_dir() == tmp_path / "config"
    assert not (tmp_path / "config").exists()  # the config dir is never created


def test_dirs_default_to_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PONDER_CACHE_DIR", "PONDER_DATA_DIR", "PONDER_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "c" / app))
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(tmp_path / "d" / app))
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda app: str(tmp_path / "f" / app))
    assert get_cache_dir() == tmp_path / "c" / "ponder"
    assert get_data_dir() == tmp_path / "d" / "ponder"
    assert get_config_dir() == tmp_path / "f" / "ponder"


# -- smart_link ----------------------------------------------------------------------------------


def test_smart_link_symlink(tmp_path: Path) -> None:
    source = tmp_path / "src.txt"
    source.write_text("data")
    target = tmp_path / "links" / "dst.txt"
    assert smart_link(source, target) == "symlink"
    assert target.is_symlink()
    assert target.read_text() == "data"
    with pytest.raises(FileExistsError):
        smart_link(source, target)
    with pytest.raises(FileNotFoundError):
        smart_link(tmp_path / "missing", tmp_path / "other")


def test_smart_link_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "src.txt"
    source.write_text("data")

    def no_symlink(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError("symlinks not allowed")

    monkeypatch.setattr(Path, "symlink_to", no_symlink)
    assert smart_link(source, tmp_path / "hard.txt") == "hardlink"
    assert os.path.samefile(source, tmp_path / "hard.txt")

    def no_link(src: object, dst: object) -> None:
        raise OSError("cross-device link")

    monkeypatch.setattr(fileutils.os, "link", no_link)
    assert smart_link(source, tmp_path / "copy.txt") == "copy"
    assert (tmp_path / "copy.txt").read_text() == "data"
    assert not os.path.samefile(source, tmp_path / "copy.txt")

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("x")
    assert smart_link(folder, tmp_path / "folder-copy") == "copy"
    assert (tmp_path / "folder-copy" / "sub" / "f").read_text() == "x"


# -- smart_rmtree ------------------------------------------------------------------------------


def test_smart_rmtree_missing_file_and_tree(tmp_path: Path) -> None:
    smart_rmtree(tmp_path / "never-existed")  # no error
    single = tmp_path / "single.txt"
    single.write_text("x")
    smart_rmtree(single)
    assert not single.exists()
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    smart_rmtree(tree)
    assert not tree.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_smart_rmtree_aggressive_handles_read_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    locked = tree / "locked"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    locked.chmod(0o500)  # entries cannot be removed from a read-only directory
    try:
        with pytest.raises(PermissionError):
            smart_rmtree(tree)
        smart_rmtree(tree, aggressive=True)
        assert not tree.exists()
    finally:
        if locked.exists():
            locked.chmod(0o700)


def test_smart_rmtree_aggressive_retries_after_permission_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # works as root too: the first unlink of the read-only file is refused, like on Windows
    tree = tmp_path / "tree"
    tree.mkdir()
    victim = tree / "ro.txt"
    victim.write_text("x")
    victim.chmod(0o400)
    real_unlink = os.unlink
    refused: list[str] = []

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        if os.path.basename(path) == "ro.txt" and not refused:
            refused.append(str(path))
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        smart_rmtree(tree)
    assert victim.exists()
    refused.clear()
    smart_rmtree(tree, aggressive=True)
    assert refused  # the first attempt really was refused
    assert not tree.exists()


# -- sync_directory ----------------------------------------------------------------------------


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_sync_directory_copies_skips_and_deletes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, {"a.txt": "a", "sub/b.txt": "bb", "sub/deeper/c.txt": "ccc"})
    assert sync_directory(src, dst) == {"copied": 3, "skipped": 0, "deleted": 0}
    assert (dst / "sub" / "deeper" / "c.txt").read_text() == "ccc"
    # unchanged: all skipped
    assert sync_directory(src, dst) == {"copied": 0, "skipped": 3, "deleted": 0}
    # a changed file (different size) and an extra file in the target
    (src / "a.txt").write_text("a changed")
    make_tree(dst, {"extra.txt": "x", "old/dir/y.txt": "y"})
    assert sync_directory(src, dst) == {"copied": 1, "skipped": 2, "deleted": 0}
    assert (dst / "extra.txt").exists()
    counts = sync_directory(src, dst, delete=True)
    assert counts["deleted"] == 4  # extra.txt, old/dir/y.txt, old/dir, old
    assert not (dst / "extra.txt").exists()
    assert not (dst / "old").exists()
    assert (dst / "a.txt").read_text() == "a changed"


def test_sync_directory_detects_same_size_change_by_mtime(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, {"f.txt": "one"})
    sync_directory(src, dst)
    (src / "f.txt").write_text("two")
    st = (dst / "f.txt").stat()
    os.utime(src / "f.txt", (st.st_atime, st.st_mtime + 10))
    assert sync_directory(src, dst)["copied"] == 1
    assert (dst / "f.txt").read_text() == "two"


def test_sync_directory_needs_a_source_dir(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        sync_directory(tmp_path / "nope", tmp_path / "dst")


# -- path_to_module ------------------------------------------------------------------------------


def test_path_to_module() -> None:
    assert path_to_module("pkg/sub/mod.py") == "pkg.sub.mod"
    assert path_to_module("pkg/sub/__init__.py") == "pkg.sub"
    assert path_to_module("./mod.py") == "mod"
    assert path_to_module(Path("pkg") / "m.py") == "pkg.m"


def test_path_to_module_with_root(tmp_path: Path) -> None:
    assert path_to_module(tmp_path / "src" / "pkg" / "m.py", root=tmp_path / "src") == "pkg.m"
    with pytest.raises(ValueError, match="is not inside"):
        path_to_module(tmp_path / "elsewhere" / "m.py", root=tmp_path / "src")
    with pytest.raises(ValueError, match="needs a root"):
        path_to_module(tmp_path / "m.py")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("pkg/data.txt", "not a Python source file"),
        ("pkg/mod", "not a Python source file"),
        ("__init__.py", "cannot make a module name"),
        ("my-pkg/mod.py", "'my-pkg' is not an identifier"),
    ],
)
def test_path_to_module_errors(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        path_to_module(path)
