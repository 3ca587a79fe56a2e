"""A deterministic synthetic codebase, and needles planted in it at chosen depths.

(Moved here from ``bench/corpus.py`` so that ``ponder eval make-dataset`` can use it;
``bench/corpus.py`` re-exports it for the benchmarks.)

:func:`generate` builds seeded Python modules (module docstring, imports, constants, classes with
methods, decorated functions, docstrings) plus a README per package, in memory, ordered as
``ponder.context.sources.load_sources`` walks a directory (sorted by name at every level), until the
requested size is reached. The same size and seed always give the same bytes.

:func:`plant_coverage` adds the six needle families of ``BENCHMARKS.md`` §5 at depths
0/25/50/75/100 % (depth = character offset in that order / total) and returns one
:class:`Question` per needle, each with the evidence lines that must reach the answer and the
reply configuration of the oracle fake provider (see ``bench/coverage.py``).

The vocabulary of the generated code never contains a needle's words or names, so only the
planted lines hold the evidence.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VOCAB = tuple((  # noqa: SIM905 - a word list reads best as text
    "alpha beta gamma delta sigma omega record buffer socket window cursor packet frame batch "
    "queue token stream channel widget layout render pixel canvas sprite palette shader mesh "
    "vertex matrix vector tensor sample signal filter kernel parser lexer syntax grammar "
    "schema column table index cache bucket shard replica leader follower session profile "
    "account member group policy scope route handler request response payload header cookie "
    "upload download export import report metric gauge counter histogram timer clock "
    "calendar event trigger action task worker runner plugin module bundle asset source "
    "target output input option flag setting config format encode decode compress expand "
    "merge split join scan probe fetch store load save parse emit collect reduce update"
).split())
VERBS = tuple((  # noqa: SIM905
    "compute build resolve normalize convert check apply merge split render load save "
    "collect update select prepare register format scan emit").split())
DIRS = ("core", "api", "io", "util", "model", "service")


def _sentence(rng: random.Random, n: int = 7) -> str:
    words = rng.sample(VOCAB, n)
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def _name(rng: random.Random, parts: int = 2) -> str:
    return "_".join(rng.choice(VOCAB) for _ in range(parts))


def _function(rng: random.Random, name: str, indent: str = "", method: bool = False) -> list[str]:
    args = ("self, " if method else "") + f"value, limit={rng.randint(2, 99)}"
    lines = []
    roll = rng.random()
    if roll < 0.15:
        lines.append(f"{indent}@functools.lru_cache(maxsize={rng.choice((None, 32, 128))})")
    elif roll < 0.25:
        lines.append(f'{indent}@register_hook("{rng.choice(VOCAB)}.{rng.choice(VOCAB)}")')
    lines += [f"{indent}def {name}({args}):",
              f'{indent}    """{rng.choice(VERBS).capitalize()} the {rng.choice(VOCAB)} '
              f'{rng.choice(VOCAB)}: {_sentence(rng, 6)}"""',
              f"{indent}    total = value * {rng.randint(2, 9)} + {rng.randint(0, 999)}"]
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.4:
            lines.append(f"{indent}    total = (total + {rng.randint(1, 99)}) % limit")
        elif kind < 0.7:
            lines += [f"{indent}    if total > limit:",
                      f"{indent}        total -= {rng.randint(1, 50)}"]
        else:
            lines += [f"{indent}    for step in range({rng.randint(2, 7)}):",
                      f"{indent}        total += step * {rng.randint(1, 9)}"]
    lines += [f"{indent}    return total", ""]
    return lines


def module_text(rng: random.Random, dotted: str, earlier: list[str], target: int) -> list[str]:
    """One module of about ``target`` characters."""
    lines = [f'"""The {dotted.rsplit(".", 1)[-1]} module: {_sentence(rng, 8)}"""', "",
             "from __future__ import annotations", "", "import functools", "import logging"]
    for other in rng.sample(earlier, min(len(earlier), rng.randint(0, 2))):  # backward only
        parent, _, mod = other.rpartition(".")
        lines.append(f"from {parent} import {mod}")
    lines += ["", "log = logging.getLogger(__name__)", ""]
    for _ in range(rng.randint(1, 4)):
        lines.append(f"{_name(rng).upper()}_{rng.randint(1, 99)} = {rng.randint(0, 99999)}")
    lines += ["", ""]
    size = sum(len(line) + 1 for line in lines)
    while size < target:
        if rng.random() < 0.35:
            cls = "".join(w.capitalize() for w in rng.sample(VOCAB, 2))
            block = [f"class {cls}:", f'    """{_sentence(rng, 9)}"""', "",
                     "    def __init__(self, limit=10):", "        self.limit = limit", ""]
            for m in range(rng.randint(2, 5)):
                block += _function(rng, f"{rng.choice(VERBS)}_{rng.choice(VOCAB)}_{m}", "    ",
                                   method=True)
            block += [""]
        else:
            block = [*_function(rng, f"{rng.choice(VERBS)}_{_name(rng)}"), ""]
        lines += block
        size += sum(len(line) + 1 for line in block)
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass
class Corpus:
    """Files in ``load_sources`` order: path -> lines (no trailing newlines)."""

    files: dict[str, list[str]]

    @property
    def chars(self) -> int:
        return sum(sum(len(line) + 1 for line in lines) for lines in self.files.values())

    def write(self, root: Path) -> Path:
        # plain writes, not atomic_write: a generated corpus is thousands of files in a fresh
        # directory, and an fsync each would cost seconds; the dataset file is written last
        # (and atomically), so a half-written corpus never has a dataset beside it
        for path, lines in self.files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return root


def _walk_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def generate(size_bytes: int, seed: int = 0) -> Corpus:
    """About ``size_bytes`` of Python modules (and a README per package), deterministic."""
    rng = random.Random(seed)
    files: dict[str, list[str]] = {}
    earlier: list[str] = []
    total = 0
    pkg = 0
    while total < size_bytes:
        base = f"pkg_{pkg:02d}"
        readme = [f"# {base}", "", _sentence(rng, 12), "", "## Usage", "",
                  _sentence(rng, 10), _sentence(rng, 10), ""]
        files[f"{base}/README.md"] = readme
        total += sum(len(line) + 1 for line in readme)
        for sub in DIRS:
            for m in range(6):
                if total >= size_bytes:
                    break
                dotted = f"{base}.{sub}.mod_{m:02d}"
                target = min(rng.randint(4_000, 24_000), max(size_bytes - total, 1_000))
                lines = module_text(rng, dotted, earlier[-200:], target)
                files[f"{base}/{sub}/mod_{m:02d}.py"] = lines
                earlier.append(dotted)
                total += sum(len(line) + 1 for line in lines)
        pkg += 1
    ordered = dict(sorted(files.items(), key=lambda item: _walk_key(item[0])))
    return Corpus(ordered)


# --- needles ----------------------------------------------------------------------------------
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Question:
    """One needle question: what to ask, what must reach the answer, how the oracle replies."""

    family: str
    key: str
    question: str
    #: depth(s) where the evidence was planted (fractions of the corpus)
    depths: list[float]
    #: texts that must all appear in the final answer for it to count as correct
    required: list[str]
    #: texts that must not appear (the other confusable constants)
    forbidden: list[str] = field(default_factory=list)
    #: fake-provider options: {"mode": "oracle", "needle": [...]} or {"mode": "rules", ...}
    provider: dict[str, Any] = field(default_factory=dict)
    #: where each planted line ended up: path, line, depth measured in the written corpus
    planted: list[dict[str, Any]] = field(default_factory=list)

    def grade(self, answer: str) -> dict[str, Any]:
        found = [text for text in self.required if text in answer]
        wrong = [text for text in self.forbidden if text in answer]
        return {"correct": len(found) == len(self.required) and not wrong,
                "found": len(found), "needed": len(self.required), "wrong": len(wrong)}


def _offsets(corpus: Corpus) -> list[tuple[str, int]]:
    out, at = [], 0
    for path, lines in corpus.files.items():
        out.append((path, at))
        at += sum(len(line) + 1 for line in lines)
    return out


def _locate(corpus: Corpus, depth: float, *, python: bool = True) -> tuple[str, int]:
    """(path, line index) of a top-level insertion point at ``depth`` of the corpus."""
    offsets = _offsets(corpus)
    total = corpus.chars
    want = depth * total
    candidates = [(p, a) for p, a in offsets if p.endswith(".py")] if python else offsets
    path, start = candidates[0]
    for p, a in candidates:
        if a <= want:
            path, start = p, a
    lines = corpus.files[path]
    if depth >= 1.0:
        return path, len(lines)
    if depth <= 0.0:
        return path, 0
    within = want - start
    at = 0
    best = len(lines)
    for i, line in enumerate(lines):
        if at >= within and i > 0 and not lines[i - 1].strip() and line[:1] not in ("", " ", "#"):
            best = i
            break
        at += len(line) + 1
    return path, best


def _insert(corpus: Corpus, depth: float, block: list[str]) -> str:
    path, index = _locate(corpus, depth)
    lines = corpus.files[path]
    lines[index:index] = [*block, ""] if index < len(lines) else ["", *block]
    return path


def _top_import(corpus: Corpus, depth: float, line: str) -> str:
    path, _ = _locate(corpus, depth)
    lines = corpus.files[path]
    at = next(i for i, text in enumerate(lines) if text.startswith("import logging")) + 1
    lines.insert(at, line)
    return path


def _dotted(path: str) -> str:
    return path[:-3].replace("/", ".")


LITERALS = (("MAGIC_PORT", "48213"), ("LEDGER_SHARD_COUNT", "61"),
            ("CHECKPOINT_INTERVAL_S", "917"), ("MAX_BEACON_HOPS", "29"),
            ("DEFAULT_QUORUM_SIZE", "7"))
FUNCTIONS = (
    ("fold_invoice_digits", "Fold the digits of an invoice number into a Luhn checksum.",
     "Which function folds the digits of an invoice number into a Luhn checksum?"),
    ("rotate_vault_keys", "Rotate the vault encryption keys and archive the retired ones.",
     "Which function rotates the vault encryption keys and archives the retired ones?"),
    ("thaw_frozen_orders", "Release orders frozen by a fraud hold once the review clears.",
     "Which function releases orders frozen by a fraud hold once the review clears?"),
    ("stitch_tile_seams", "Blend the seams between adjacent satellite map tiles.",
     "Which function blends the seams between adjacent satellite map tiles?"),
    ("debounce_sensor_spikes", "Drop thermometer spikes shorter than the debounce interval.",
     "Which function drops thermometer spikes shorter than the debounce interval?"),
)
CONFUSABLES = (("RETRY_BUDGET_ALPHA", "1200"), ("RETRY_BUDGET_BRAVO", "3400"),
               ("RETRY_BUDGET_CHARLIE", "5600"), ("RETRY_BUDGET_DELTA", "7800"),
               ("RETRY_BUDGET_ECHO", "9100"), ("RETRY_BUDGET_FOXTROT", "2300"))
TWO_HOPS = (("handshake_timeout", "grace_window_seconds", "731"),
            ("shard_rebalance_delay", "backoff_floor_ms", "2750"),
            ("cache_warmup_budget", "prefetch_quota", "96"),
            ("audit_retention_days", "compliance_horizon", "400"),
            ("replica_lag_limit", "drift_tolerance_ms", "1850"))
AUDITED = (("ledger.settle", "settle_ledger_batch"), ("vault.unseal", "unseal_vault_door"),
           ("orders.refund", "refund_order_total"), ("users.erase", "erase_user_record"),
           ("keys.revoke", "revoke_signing_key"))
FAMILIES = ("literal", "function", "confusable", "two_hop", "aggregation", "pairs")


def _lookahead_all(patterns: list[str]) -> str:
    return r"(?s)\A" + "".join(f"(?=.*?(?:{p}))" for p in patterns)


def plant_coverage(corpus: Corpus) -> list[Question]:
    """Plant every family's needles in ``corpus`` (in place); one Question per needle."""
    qs: list[Question] = []
    # 1. literal constants, one per depth
    for (name, value), depth in zip(LITERALS, DEPTHS, strict=True):
        line = f"{name} = {value}"
        _insert(corpus, depth, [line])
        qs.append(Question("literal", name, f"What is the value of {name}?", [depth], [line],
                           provider={"mode": "oracle", "needle": [f"n={line}"]}))
    # 2. a function described in words
    for (name, doc, question), depth in zip(FUNCTIONS, DEPTHS, strict=True):
        _insert(corpus, depth, [f"def {name}(value):", f'    """{doc}"""',
                                "    digits = [int(c) for c in str(value)]",
                                "    return sum(digits) % 10"])
        qs.append(Question("function", name, question, [depth], [name],
                           provider={"mode": "oracle", "needle": [f"n={name}"]}))
    # 3. six confusable constants, same template; five asked (one per depth), one extra
    lines = [f"{name} = {value}" for name, value in CONFUSABLES]
    for line, depth in zip(lines, (*DEPTHS, 0.6), strict=True):
        _insert(corpus, depth, [line])
    for (name, _), line, depth in zip(CONFUSABLES, lines, DEPTHS, strict=False):
        qs.append(Question("confusable", name, f"What is the value of {name}?", [depth],
                           [line], forbidden=[other for other in lines if other != line],
                           provider={"mode": "oracle", "needle": [f"n={line}"]}))
    # 4. two hops across files: A (asked about) calls B, B holds the value; B is 50 % away
    for (a, b, value), depth in zip(TWO_HOPS, DEPTHS, strict=True):
        line_a = f"def {a}(): return {b}()"
        line_b = f"def {b}(): return {value}"
        depth_b = (depth + 0.5) % 1.0 if depth < 1.0 else 0.5
        _insert(corpus, depth, [line_a])
        _insert(corpus, depth_b, [line_b])
        ea, eb = re.escape(line_a), re.escape(line_b)
        rules = [f"{_lookahead_all([ea, eb])}=>{line_a}\n{line_b}", f"(?s){ea}=>{line_a}"]
        qs.append(Question("two_hop", a, f"What value does {a}() return?", [depth, depth_b],
                           [line_b], provider={"mode": "rules", "rule": rules,
                                               "default_reply": "NOT FOUND"}))
    # 5. aggregation: functions with one decorator, one at each depth
    decorators = []
    for (label, fn), depth in zip(AUDITED, DEPTHS, strict=True):
        deco = f'@audit_trail("{label}")'
        decorators.append(deco)
        _insert(corpus, depth, [deco, f"def {fn}(item):", f'    """{fn} with an audit entry."""',
                                "    return item"])
    qs.append(Question("aggregation", "audit_trail",
                       "How many functions are decorated with @audit_trail?", list(DEPTHS),
                       decorators, provider={"mode": "oracle",
                                             "needle": [f"d{i}={d}" for i, d in
                                                        enumerate(decorators)]}))
    # 6. a pair of modules importing each other (generated imports only point backwards, so
    #    this is the only cycle); X at 25 %, Y at 75 %
    x_path, _ = _locate(corpus, 0.25)
    y_path, _ = _locate(corpus, 0.75)
    x_mod, y_mod = _dotted(x_path), _dotted(y_path)
    x_parent, _, x_name = x_mod.rpartition(".")
    y_parent, _, y_name = y_mod.rpartition(".")
    _top_import(corpus, 0.25, f"from {y_parent} import {y_name}")
    _top_import(corpus, 0.75, f"from {x_parent} import {x_name}")
    said_xy, said_yx = f"{x_path} imports {y_mod}", f"{y_path} imports {x_mod}"

    def seen(path: str, parent: str, name: str, said: str) -> str:
        # the import line inside that file's piece (up to the next `=== path` header), or a
        # finding that already says so
        raw = (rf"=== {re.escape(path)} \(lines (?:(?!\n=== ).)*?\| from {re.escape(parent)} "
               rf"import {re.escape(name)}(?=\n|$)")
        return f"{raw}|{re.escape(said)}"

    xy, yx = seen(x_path, y_parent, y_name, said_xy), seen(y_path, x_parent, x_name, said_yx)
    rules = [f"{_lookahead_all([xy, yx])}=>{said_xy}\n{said_yx}\n"
             f"So {x_mod} and {y_mod} import each other.",
             f"(?s){xy}=>{said_xy}", f"(?s){yx}=>{said_yx}"]
    qs.append(Question("pairs", "import_cycle", "Which two modules import each other?",
                       [0.25, 0.75], [said_xy, said_yx],
                       provider={"mode": "rules", "rule": rules, "default_reply": "NOT FOUND"}))
    return qs


def locate_planted(corpus: Corpus, questions: list[Question]) -> None:
    """Record where each question's evidence lines are: path, 1-based line, measured depth."""
    offsets = dict(_offsets(corpus))
    total = corpus.chars
    wanted: dict[str, list[Question]] = {}
    for q in questions:
        if q.family == "function":
            texts = [f"def {q.key}("]
        elif q.family == "two_hop":
            texts = [f"def {q.key}(", *q.required]
        elif q.family == "pairs":  # the planted import line in each of the two files
            texts = []
            for said in q.required:
                path, _, module = said.partition(" imports ")
                parent, _, name = module.rpartition(".")
                texts.append(f"{path}:from {parent} import {name}")
        else:
            texts = q.required
        for text in texts:
            wanted.setdefault(text, []).append(q)
    for path, lines in corpus.files.items():
        at = offsets[path]
        for i, line in enumerate(lines):
            for text, qs in wanted.items():
                in_file, _, text = text.rpartition(":") if ".py:" in text else ("", "", text)
                if in_file and in_file != path:
                    continue
                if text in line and (line.startswith(text) or text.startswith("def ")):
                    for q in qs:
                        q.planted.append({"path": path, "line": i + 1,
                                          "depth": round(at / total, 4)})
            at += len(line) + 1
