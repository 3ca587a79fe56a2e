"""Reading one file safely: what is left out before opening it, and how its bytes become text.

Every way of loading meets the same bad inputs (binary files, files too large for the limit,
files that typically hold credentials, bytes that are not UTF-8, OS errors), and each must be
told apart with the same rule and reported with the same wording, whichever loader met it: a
walk, a glob, a file named explicitly, standard input or ``git diff`` output. These decisions are
kept here, apart from how files are found, so that they are made once. Nothing here raises for a
bad file: a caller gets a reason to list in ``Context.skipped``.
"""

from __future__ import annotations

import codecs
import errno
import fnmatch
import os
import re
import threading

_BINARY_KINDS = {
    "image": "png jpg jpeg gif bmp ico icns webp tif tiff psd svgz heic avif",
    "document": "pdf doc docx xls xlsx ppt pptx odt ods odp epub",
    "archive": "zip gz tgz bz2 xz zst lz4 7z rar tar jar war ear whl egg apk dmg iso deb rpm",
    "compiled": "so dylib dll exe o obj a lib ko pyc pyo pyd class wasm bin elc beam",
    "font": "woff woff2 ttf otf eot",
    "media": "mp3 mp4 m4a wav ogg oga flac aac avi mov mkv webm wmv flv",
    "data": "sqlite sqlite3 db mdb npy npz pkl pickle parquet feather arrow h5 hdf5",
    "model": "onnx pt pth safetensors gguf ckpt tflite pb",
}
BINARY_EXTENSIONS = frozenset(ext for group in _BINARY_KINDS.values() for ext in group.split())
"""Extensions (without the dot) read as binary without opening the file. Other files are binary
when their first 8 KB hold a NUL byte."""

BINARY_SNIFF_BYTES = 8192
"""How far into a file (or standard input) a NUL byte makes it binary."""

#: files that typically hold credentials: never sent to a model unless the user insists
SECRET_FILE_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*",
                        ".netrc", ".pypirc", "credentials.json")


#: the patterns as one regular expression: one match per file instead of one fnmatch per pattern
#: (a walk asks this of every file it meets)
_SECRET_FILE = re.compile("|".join(fnmatch.translate(p) for p in SECRET_FILE_PATTERNS))


def is_secret_file(name: str) -> bool:
    """Whether a file named ``name`` (no directory) matches ``SECRET_FILE_PATTERNS``
    (case-sensitively, as ``fnmatch.fnmatchcase``)."""
    return _SECRET_FILE.match(name) is not None


def is_binary(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes, or all of them) holds a NUL in its first 8 KB."""
    return data.find(b"\0", 0, BINARY_SNIFF_BYTES) != -1


def refusal(path: str, size: int, max_file_bytes: int) -> str | None:
    """Why the file at ``path`` (``size`` bytes by ``stat``) is left out without opening it:
    too large, binary by its extension, or likely to hold secrets; None when it may be read."""
    if size > max_file_bytes:
        return too_large(size, max_file_bytes)
    if os.path.splitext(path)[1][1:].lower() in BINARY_EXTENSIONS:
        return "binary file"
    if is_secret_file(os.path.basename(path)):
        return "may hold secrets (.env, keys): never sent to a model"
    return None


# -- decoding ------------------------------------------------------------------------------------

_repairs = threading.local()


def _count_repair(error: UnicodeError) -> tuple[str, int]:
    # Same output as errors="replace", counting the bytes it replaces.
    assert isinstance(error, UnicodeDecodeError)
    _repairs.count += error.end - error.start
    return "\ufffd", error.end


codecs.register_error("ponder.repair", _count_repair)


def decode_text(data: bytes) -> tuple[str, int]:
    """``data`` as UTF-8 text and how many bytes were not valid UTF-8 (each run replaced by U+FFFD).

    A byte-order mark is dropped and CRLF line ends become LF, so line numbers match editors.
    """
    try:
        text, repaired = data.decode("utf-8"), 0
    except UnicodeDecodeError:
        _repairs.count = 0
        text = data.decode("utf-8", "ponder.repair")
        repaired = _repairs.count
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text, repaired


def repaired_reason(repaired: int) -> str:
    """The ``skipped`` reason for text loaded after ``repaired`` bytes were replaced."""
    plural = "s" if repaired > 1 else ""
    return f"not valid UTF-8: repaired {repaired} byte{plural}"


# -- reasons -------------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def too_large(size: int, limit: int) -> str:
    """The reason for a file of ``size`` bytes over ``limit``, both shown so they differ."""
    shown = _size(size)
    if shown == _size(limit):  # rounding made them look equal
        shown = f"{size:,} bytes"
    return f"larger than {_size(limit)} limit ({shown})"


def os_reason(error: OSError) -> str:
    """The reason for a file or directory that ``error`` kept from being read."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "symlink loop"
    return f"unreadable: {error.strerror or error}"
