"""Shape a fake model's reply so a DSPy adapter parses it.

DSPy adapters tell the model which output fields to produce; a fake model has to answer in the same
shape or DSPy raises ``AdapterParseError`` (and ChatAdapter silently retries with JSONAdapter, which
doubles the call count). :func:`format_for_dspy` reads the field list back out of the prompt and
wraps a reply in the matching format. Standard library only; it never imports dspy.

The exact rule:

1. **Output fields** come from the first message (system messages first) that holds DSPy's field
   description, written by every adapter as::

       Your output fields are:
       1. `answer` (str): the answer
       2. `confidence` (Literal['low', 'high']):

   If that block is missing, the field names and types come from the reminder DSPy appends
   to the user message ("... starting with the field `[[ ## answer ## ]]`, then ..." for
   ChatAdapter, "Respond with a JSON object in the following order of fields: `answer`, ..." for
   JSONAdapter, "... wrapped in XML tags `<answer>`, ..." for XMLAdapter). No fields found: the
   reply is returned as plain text (a dict of values is rendered as JSON).
2. **Style**: JSON when ``json_mode`` is true (the provider passes true when the request carries
   ``response_format``) or the prompt holds JSONAdapter's wording ("Outputs will be a JSON object
   with the following fields." / "Respond with a JSON object in the following order of fields");
   XML when it holds XMLAdapter's "wrapped in XML tags"; otherwise ChatAdapter's
   ``[[ ## field ## ]]`` sections.
3. **Values**: a ``dict`` maps field names to values. A ``str`` fills the *primary* field: the
   first output field not named ``reasoning`` (ChainOfThought puts ``reasoning`` first), or the
   first field if that is all there is. A ``str`` that already holds ``[[ ## completed ## ]]`` is
   returned unchanged in chat style (the caller formatted it already).
4. **Placeholders** for fields without a value, chosen from the declared type: ``str`` -> ``""``
   (``"high"`` when the field name contains ``confidence``); ``Literal[...]`` -> ``"high"`` when
   allowed and the name contains ``confidence``, else the first allowed value; ``bool`` -> False;
   ``int`` -> 0; ``float`` -> 0.0 (0.9 for a confidence field); ``list``/``tuple``/``set`` ->
   ``[]``; ``dict`` -> ``{}``; ``Optional[X]``/``X | None`` -> the placeholder of X; ``reasoning``
   -> ``"(fake reasoning)"``; anything else -> ``""``.
5. **Rendering**: chat: ``[[ ## name ## ]]\\n<value>`` sections joined by blank lines, then
   ``[[ ## completed ## ]]``; strings verbatim, other values as JSON. JSON: one JSON object in field
   order. XML: ``<name>\\n<value>\\n</name>`` with ``&`` and ``<`` escaped.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "OutputField",
    "detect_output_fields",
    "detect_style",
    "format_for_dspy",
    "message_text",
    "placeholder_for",
]

OUTPUT_HEADER = "Your output fields are:"
COMPLETED_MARKER = "[[ ## completed ## ]]"
_JSON_MARKERS = (
    "Outputs will be a JSON object with the following fields.",
    "Respond with a JSON object in the following order of fields",
)
_XML_MARKER = "Respond with the corresponding output fields wrapped in XML tags"
_SECTION_END = ("All interactions will be structured", "[[ ## ", "In adhering to this structure")
_CHAT_REMINDER = re.compile(r"starting with the field `\[\[ ## \w+ ## \]\]`.*", re.DOTALL)
_TYPE_HINT = r"(?: \(must be formatted as a valid Python (.+?)\))?(?=, then |, and then |\.|$)"
_CHAT_REMINDER_FIELD = re.compile(r"`\[\[ ## (\w+) ## \]\]`" + _TYPE_HINT)
_JSON_REMINDER = re.compile(r"Respond with a JSON object in the following order of fields: (.*)")
_XML_REMINDER = re.compile(re.escape(_XML_MARKER) + r" (.*)")
_BACKTICK_NAME = re.compile(r"`<?(\w+)>?`" + _TYPE_HINT)

OutputField = tuple[str, str]
"""(field name, type as DSPy printed it, e.g. ``"list[str]"``)."""


def message_text(content: Any) -> str:
    """The text of one OpenAI message ``content``: a string, or a list of parts with ``text``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def _ordered_texts(messages: Iterable[Mapping[str, Any]]) -> list[str]:
    """Message texts, system messages first, each group in order."""
    msgs = [m for m in messages if isinstance(m, Mapping)]
    system = [message_text(m.get("content")) for m in msgs if m.get("role") == "system"]
    other = [message_text(m.get("content")) for m in msgs if m.get("role") != "system"]
    return system + other


def _unquoted(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """``(index, char, depth)`` for each char of ``text[start:]`` outside quotes, ``depth`` being
    the brackets open before it: the one bracket/quote scanner both parsers below walk."""
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
            continue
        yield i, ch, depth
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1


def _scan_type(line: str, start: int) -> int:
    """Index of the ``)`` closing the type starting at ``start``, or -1; brackets/quotes aware."""
    for i, ch, depth in _unquoted(line, start):
        if ch in "])" and depth == 0:
            return i if ch == ")" else -1
    return -1


def _parse_field_block(text: str) -> list[OutputField]:
    idx = text.find(OUTPUT_HEADER)
    if idx < 0:
        return []
    fields: list[OutputField] = []
    for line in text[idx + len(OUTPUT_HEADER) :].splitlines()[1:]:
        if line.startswith(_SECTION_END):
            break
        prefix = f"{len(fields) + 1}. `"
        if not line.startswith(prefix):
            continue  # a continuation of the previous field's description
        rest = line[len(prefix) :]
        tick = rest.find("`")
        if tick <= 0 or not rest[tick:].startswith("` ("):
            continue
        name = rest[:tick]
        if not re.fullmatch(r"\w+", name):
            continue
        type_start = tick + 3
        end = _scan_type(rest, type_start)
        type_str = rest[type_start:end] if end > 0 else "str"
        fields.append((name, type_str.strip() or "str"))
    return fields


def _parse_reminder(texts: list[str]) -> list[OutputField]:
    for text in reversed(texts):  # the reminder sits in the last user message
        m = _CHAT_REMINDER.search(text)
        if m:
            found = [(n, t or "str") for n, t in _CHAT_REMINDER_FIELD.findall(m.group(0))]
            found = [f for f in found if f[0] != "completed"]
            if found:
                return found
        for pattern in (_JSON_REMINDER, _XML_REMINDER):
            m = pattern.search(text)
            if m:
                found = [(n, t or "str") for n, t in _BACKTICK_NAME.findall(m.group(1))]
                if found:
                    return found
    return []


def detect_output_fields(messages: Iterable[Mapping[str, Any]]) -> list[OutputField]:
    """The DSPy output fields requested by ``messages`` as ``(name, type)``; ``[]`` when none."""
    texts = _ordered_texts(messages)
    for text in texts:
        fields = _parse_field_block(text)
        if fields:
            return fields
    return _parse_reminder(texts)


def detect_style(messages: Iterable[Mapping[str, Any]], json_mode: bool | None = None) -> str:
    """``"json"``, ``"xml"`` or ``"chat"``: which DSPy adapter wrote ``messages``."""
    if json_mode:
        return "json"
    texts = _ordered_texts(messages)
    if any(marker in text for text in texts for marker in _JSON_MARKERS):
        return "json"
    if any(_XML_MARKER in text for text in texts):
        return "xml"
    return "chat"


def _split_args(inner: str) -> list[str]:
    """Split ``"a, b[c, d], e"`` at top-level commas."""
    out: list[str] = []
    begin = 0
    for i, ch, depth in _unquoted(inner):
        if ch == "," and depth == 0:
            out.append(inner[begin:i].strip())
            begin = i + 1
    tail = inner[begin:].strip()
    if tail:
        out.append(tail)
    return out


def placeholder_for(name: str, type_str: str) -> Any:
    """A value of DSPy type ``type_str`` (as printed in the prompt) that parses; see rule 4."""
    t = type_str.strip()
    confident = "confidence" in name.lower()
    if name == "reasoning" and t == "str":
        return "(fake reasoning)"
    head, _, tail = t.partition("[")
    head = head.strip().rsplit(".", 1)[-1]
    inner = tail[:-1] if tail.endswith("]") else ""
    if head in ("Optional", "Union"):
        args = [a for a in _split_args(inner) if a not in ("None", "NoneType")]
        return placeholder_for(name, args[0]) if args else None
    if head == "Literal":
        try:
            allowed = list(ast.literal_eval(f"[{inner}]"))
        except (ValueError, SyntaxError):
            allowed = []
        if confident and "high" in allowed:
            return "high"
        return allowed[0] if allowed else ""
    if head in ("list", "List", "tuple", "Tuple", "set", "Set", "Sequence", "frozenset"):
        return []
    if head in ("dict", "Dict", "Mapping"):
        return {}
    if head == "bool":
        return False
    if head == "int":
        return 0
    if head == "float":
        return 0.9 if confident else 0.0
    if head == "str":
        return "high" if confident else ""
    return ""


def _primary(fields: list[OutputField]) -> str:
    for name, _ in fields:
        if name != "reasoning":
            return name
    return fields[0][0]


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def format_for_dspy(
    messages: Iterable[Mapping[str, Any]],
    values: Mapping[str, Any] | str,
    *,
    json_mode: bool | None = None,
) -> str:
    """Wrap ``values`` (reply text or field -> value) so the DSPy adapter of ``messages`` parses it.

    ``messages`` are OpenAI-style chat messages; ``json_mode`` forces the JSON style (pass true when
    the request had ``response_format``). The module docstring states the exact rule.
    """
    messages = list(messages)
    fields = detect_output_fields(messages)
    if not fields:
        if isinstance(values, str):
            return values
        if len(values) == 1:
            return _as_text(next(iter(values.values())))
        return json.dumps(dict(values), ensure_ascii=False, default=str)
    style = detect_style(messages, json_mode)
    if isinstance(values, str):
        if style == "chat" and COMPLETED_MARKER in values:
            return values
        values = {_primary(fields): values}
    filled = {
        name: values[name] if name in values else placeholder_for(name, type_str)
        for name, type_str in fields
    }
    if style == "json":
        return json.dumps(filled, ensure_ascii=False, default=str)
    if style == "xml":
        return "\n\n".join(
            f"<{n}>\n{_as_text(v).replace('&', '&amp;').replace('<', '&lt;')}\n</{n}>"
            for n, v in filled.items()
        )
    body = "\n\n".join(f"[[ ## {n} ## ]]\n{_as_text(v)}" for n, v in filled.items())
    return f"{body}\n\n{COMPLETED_MARKER}"
