"""What the fake provider answers: the reply rules (``rules``, ``oracle``, ``echo``, the scripted
RLM root), the fake tokenizer and embedding, and the OpenAI-shaped response bodies.

Kept apart from the server so the answer to a prompt is a pure function of the settings and the
messages: the live ``/v1/chat/completions`` route and the Batch API
(:mod:`ponder.testing.fake_batches`) build their answers from the same pieces, which is what
makes a batch answer equal the live answer to the same prompt. Replies in DSPy's format come
from :func:`ponder.support.dspy_format.format_for_dspy` (:func:`render_reply`), so a DSPy
program parses them; the rules themselves are described in the
:mod:`ponder.testing.fake_provider` docstring.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from ponder.support.dspy_format import format_for_dspy, message_text
from ponder.testing.fake_rlm import rlm_root_code, rlm_root_turn
from ponder.testing.fake_settings import FakeProviderConfig

__all__ = [
    "chat_completion",
    "count_tokens",
    "embed_text",
    "embeddings_list",
    "render_reply",
    "reply_values",
]

def count_tokens(chars: int) -> int:
    """The fake tokenizer: ``ceil(chars / 4)``."""
    return (chars + 3) // 4


_WORD = re.compile(r"\w+")


def embed_text(text: str, dim: int = 64) -> list[float]:
    """Hashed bag-of-words embedding, L2-normalised: shared words make texts close.

    Each lower-cased ``\\w+`` token adds +-1 at a blake2b-chosen index (sign from the hash too).
    A text without words maps to the unit vector on axis 0, never to a zero vector.
    """
    vec = [0.0] * dim
    for tok in _WORD.findall(text.lower()):
        h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 40) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0.0:
        vec[0] = 1.0
        return vec
    return [x / norm for x in vec]


def _error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def reply_values(
    config: FakeProviderConfig,
    rules: Sequence[tuple[re.Pattern[str], Any]],
    request: dict,
    messages: list[dict],
    texts: list[str],
) -> str | Mapping:
    """The reply to one chat request before formatting: a text, or a dict of DSPy field values.

    ``request["reply"]`` (the ``X-Fake-Reply`` header) wins; then the scripted RLM root (when
    ``config.rlm_root`` and the prompt is a root prompt); then ``request["mode"]``. ``rules`` are
    ``config.rules`` compiled once by the provider.
    """
    forced = request.get("reply")
    if forced is not None:
        return forced
    prompt = "\n".join(texts)
    if config.rlm_root:
        turn = rlm_root_turn(prompt)
        if turn is not None:
            return {
                "reasoning": f"Scripted RLM root, iteration {turn}: search, read, submit.",
                "code": "```python\n"
                + rlm_root_code(turn, config.rlm_pattern, config.rlm_max_hits)
                + "\n```",
            }
    mode = request["mode"]
    if mode == "echo":
        users = [m for m in messages if m.get("role") == "user"] or messages
        return message_text(users[-1].get("content"))
    if mode == "oracle":
        found = [ans for ans in config.needles.values() if ans in prompt]
        return "\n".join(found) if found else config.oracle_miss
    for pattern, reply in rules:
        if pattern.search(prompt):
            return reply
    return config.default_reply


def render_reply(
    config: FakeProviderConfig, messages: list[dict], values: str | Mapping, body: dict
) -> str:
    """The message content sent back: ``values`` in DSPy's format (ChatAdapter sections, or JSON
    when the request has a JSON ``response_format``), or plain text with ``dspy_format=False``."""
    rf = body.get("response_format")
    json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
    if config.dspy_format or not isinstance(values, str):
        return format_for_dspy(messages, values, json_mode=json_mode)
    return values


def chat_completion(
    id_: int, created: int, model: str, content: str, n: int,
    prompt_tokens: int, completion_tokens: int,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` body with ``n`` identical choices."""
    return {
        "id": f"chatcmpl-fake-{id_}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_ponder_fake",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embeddings_list(
    inputs: list[str], dim: int, encoding_format: str, model: str, prompt_tokens: int
) -> dict[str, Any]:
    """An OpenAI embeddings ``list`` body: :func:`embed_text` per input, as floats or base64."""
    data = []
    for i, text in enumerate(inputs):
        vec = embed_text(text, dim)
        emb: Any = vec
        if encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
