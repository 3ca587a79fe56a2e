"""An eval dataset over generated folders, some holding a needle line and some not.

The eval tests (in process, on the threads executor and on Ray) all need the same thing: a
folder per example, the needle's line (``MAGIC_PORT = <needle>``) in the ``present`` ones, and a
JSONL dataset asking each folder for it, the ids saying which kind it is. One generator, so the
executors are compared on the very same examples.
"""

from __future__ import annotations

import json
from pathlib import Path

QUESTION = "What is the value of MAGIC_PORT?"


def needle_dataset(root: Path, present: int, absent: int, *, needle: str, files: int = 1,
                   lines: int = 5, absolute: bool = False) -> Path:
    """``root/qa.jsonl``: ``present`` folders holding the needle's line and ``absent`` without
    it, under ``root/corpus``. Sources are relative to ``root`` unless ``absolute`` (Ray workers
    read them from another working directory)."""
    rows = []
    for kind, count in (("present", present), ("absent", absent)):
        for i in range(count):
            folder = root / "corpus" / f"{kind}{i}"
            folder.mkdir(parents=True)
            for f in range(files):
                body = "".join(f"def helper_{f}_{j}():\n    return {j}\n" for j in range(lines))
                if kind == "present" and f == files - 1:
                    body += f"MAGIC_PORT = {needle}\n"
                (folder / f"m{f}.py").write_text(body)
            source = str(folder) if absolute else f"corpus/{kind}{i}"
            rows.append({"id": f"{kind}{i}", "question": QUESTION, "sources": [source],
                         "answer": needle, "tags": [kind]})
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
