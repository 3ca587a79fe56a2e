"""A questions file becomes batch requests; a batch reply becomes an answer.

Each line of ``QUESTIONS.jsonl`` is an eval-dataset example: ``question`` (required),
``sources`` (a path or a list of paths, globs or directories, relative to the file's folder;
required), optional ``id``, and any other keys (``answer``, ``evidence``…), which are kept with
the request but not sent. Each becomes one chat request: the prompt the ``direct`` strategy
sends (the shared answer signature over the whole rendered sources), formatted by DSPy's
``ChatAdapter`` so the reply is parsed the same way a live answer is. A question whose sources
do not fit the model's window in one prompt is listed as skipped (with the reason), not sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.support.batch import BatchRequest


@attrs.frozen
class Question:
    custom_id: str
    question: str
    sources: list[str]
    extra: dict[str, Any]
    line: int


def load_questions(path: str | Path) -> list[Question]:
    """Read and check the questions file; an error names ``file:line`` and the key at fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"questions file {path} does not exist")
    questions: list[Question] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{where}: expected a JSON object")
            question = row.get("question")
            if not isinstance(question, str) or not question.strip():
                raise ConfigError(f"{where}: 'question' must be a non-empty string")
            sources = row.get("sources")
            if isinstance(sources, str):
                sources = [sources]
            if not isinstance(sources, list) or not sources or \
                    not all(isinstance(s, str) and s for s in sources):
                raise ConfigError(f"{where}: 'sources' must be a path or a non-empty list of "
                                  "paths")
            base = path.parent
            resolved = [s if s == "-" or Path(s).is_absolute() else str(base / s)
                        for s in sources]
            custom_id = _custom_id(row.get("id"), len(questions), seen)
            seen.add(custom_id)
            extra = {k: v for k, v in row.items() if k not in ("question", "sources")}
            questions.append(Question(custom_id, question.strip(), resolved, extra, number))
    if not questions:
        raise ConfigError(f"questions file {path} has no questions")
    return questions


def _custom_id(value: Any, index: int, seen: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.:-]", "_", str(value))[:60] if value not in (None, "") \
        else f"q{index + 1:05d}"
    custom_id, n = base, 1
    while custom_id in seen:
        n += 1
        custom_id = f"{base}-{n}"
    return custom_id


def build_request(question: Question, model: str, model_info: Any,
                  max_tokens: int | None = None) -> tuple[BatchRequest | None, str | None, int]:
    """The batch request for ``question`` (or None and why), and its prompt's estimated tokens."""
    import dspy

    from ponder.context.sources import load_sources
    from ponder.context.tokens import estimate_tokens
    from ponder.plugins._common import render_documents
    from ponder.plugins._signatures import answer_signature

    try:
        context = load_sources(question.sources)
    except Exception as exc:
        return None, f"its sources could not be read: {exc}", 0
    if not context.documents:
        return None, "its sources hold no readable text", 0
    messages = dspy.ChatAdapter().format(
        answer_signature(), demos=[],
        inputs={"question": question.question, "context": render_documents(context.documents)})
    tokens = sum(estimate_tokens(str(m.get("content", ""))) for m in messages)
    room = model_info.context_window - model_info.max_output_tokens
    if tokens > room:
        window = model_info.context_window
        return None, (f"its prompt (≈{tokens:,} tokens) does not fit the {window:,}-token "
                      "window in one call; ask it with `ponder ask` (map_reduce)"), tokens
    params: dict[str, Any] = {"temperature": 0.0,
                              "max_tokens": max_tokens or model_info.max_output_tokens}
    return BatchRequest(custom_id=question.custom_id, messages=messages, model=model,
                        params=params), None, tokens


def parse_reply(content: str) -> str:
    """The ``answer`` field of a ChatAdapter-formatted reply (the raw text if it has none)."""
    import dspy

    from ponder.plugins._signatures import answer_signature

    try:
        fields = dspy.ChatAdapter().parse(answer_signature(), content)
    except Exception:
        return content.strip()
    return str(fields.get("answer") or "").strip() or content.strip()
