"""A conversation over sources loaded once: ``ponder.Session``, ``ponder chat``, ``ask --session``.

::

    import ponder

    with ponder.Session("review", ["src/"]) as session:
        session.ask("Where is the retry policy?")
        session.ask("And who calls it?")           # sees the first question and its answer

**Loaded once.** The sources are read on the first question and kept for the session's life in
this process; their chunkings are kept too (:func:`ponder.context.chunking.keep_chunks`), and a
retriever's index is built once and kept in memory with them (``Services.index`` hands the same
indexed retriever back for the same chunks; :meth:`Session.close` lets both go). A session
resumed in another process (``ask --session NAME``) reads the sources again (about a tenth of a
second for 10 MB) and loads its index from the store; if the files changed since, the digest
differs and a warning says so.

**History.** Each question goes to the strategy with the conversation so far in front of it,
newest turns kept and **the oldest dropped** to fit ``[sessions] history_tokens``, at most a
quarter of the model's context window (a single turn
too long for the budget has its answer cut). Dropped turns are not summarised: summarising would
cost a model call per turn; the turns stay in the record, only the prompt leaves them out.

**Stored.** A named session lives in the run store (:mod:`ponder.sessions.store`): sources and
their digest, the config (masked), every turn with its usage and run id. It survives restarts
and expires ``[sessions] ttl`` seconds after its last turn. An unnamed session (``Session(None,
…)``, ``ponder chat`` before ``/save``) lives in memory only.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import attrs

from ponder.context.tokens import estimate_tokens
from ponder.errors import ConfigError
from ponder.sessions.store import SessionSettings, SessionStore, check_name

__all__ = ["Session", "history_prompt"]

log = logging.getLogger("ponder.sessions")


def history_prompt(turns: Sequence[dict[str, Any]], question: str, budget: int) -> tuple[str,
                                                                                         int]:
    """(the text the strategy is asked, how many earlier turns it holds).

    Turns are taken newest first while they fit ``budget`` tokens; the first that does not fit,
    and everything older, is dropped (a newest turn too long on its own is cut to fit).
    """
    kept: list[str] = []
    used = 0
    for turn in reversed(turns):
        text = f"Q: {turn['question']}\nA: {turn['answer']}"
        tokens = estimate_tokens(text)
        if used + tokens > budget:
            if not kept:  # the last turn alone is too long: keep its head
                room = max(budget - used, 0) * 4
                kept.append(text[:room] + " …")
            break
        kept.append(text)
        used += tokens
    if not kept:
        return question, 0
    history = "\n\n".join(reversed(kept))
    return (f"Earlier in this conversation (oldest first):\n\n{history}\n\n"
            f"Current question (answer this one; use the earlier turns only for context): "
            f"{question}"), len(kept)


class Session:
    """Questions over one loaded context, each seeing the conversation so far."""

    def __init__(self, name: str | None = None, sources: Sequence[str] = (), *,
                 system: Any = None, config: Any = None, include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> None:
        from ponder.engine.system import System

        if system is None:
            from ponder.kernel.config import load_config

            if config is None or isinstance(config, (str, os.PathLike)):
                config = load_config(config)
            system = System(config, progress="silent")
        self.system = system
        self.settings: SessionSettings = system.config.section("sessions", SessionSettings)
        self.name = check_name(name) if name else None
        self._storage = system.open_storage() if self.name else None
        self.store = SessionStore(self._storage, self.settings) if self.name else None
        record = self.store.get(self.name) if self.store is not None else None
        self.resumed = record is not None
        if self.name and "-" in sources:
            raise ConfigError(f"session {self.name!r}: standard input (-) cannot be read again "
                              "by a later turn; save it to a file and name the file")
        # stored as absolute paths: a later turn may run from another directory
        sources = [s if s == "-" else os.path.abspath(s) for s in sources]
        now = time.time()
        if record is None:
            record = {"name": self.name, "created_at": now, "sources": list(sources),
                      "include": list(include), "exclude": list(exclude), "turns": [],
                      "source_digest": None}
        elif sources and list(sources) != record["sources"]:
            raise ConfigError(f"session {self.name!r} is over {', '.join(record['sources'])}; "
                              "start a new session for other sources (or delete this one: "
                              f"ponder sessions delete {self.name})")
        if not record["sources"]:
            raise ConfigError(f"session {self.name or '(unnamed)'}: no sources: name the files "
                              "or directories to talk about")
        record["config"] = system.config.to_dict(masked=True)
        self.record = record
        self._context: Any = None
        self._window: int | None = None
        #: seconds the latest ask spent loading the sources (0 when they were loaded already)
        self.last_load_s = 0.0

    # --- the loaded context -----------------------------------------------------------------
    @property
    def sources(self) -> list[str]:
        return list(self.record["sources"])

    @property
    def turns(self) -> list[dict[str, Any]]:
        return list(self.record["turns"])

    @property
    def context(self) -> Any:
        """The sources, loaded on first use and kept (with their chunkings) for the session."""
        if self._context is None:
            from ponder.context.chunking import keep_chunks
            from ponder.context.sources import load_sources

            started = time.perf_counter()
            context = load_sources(self.sources, include=self.record.get("include") or (),
                                   exclude=self.record.get("exclude") or ())
            digest = context.digest()
            old = self.record.get("source_digest")
            if old is not None and old != digest:
                log.warning("the sources of session %s changed since it began; answering over "
                            "them as they are now", self.name)
            self.record["source_digest"] = digest
            keep_chunks(context)
            self._context = context
            self.last_load_s = time.perf_counter() - started
        return self._context

    # --- asking -------------------------------------------------------------------------------
    def ask(self, question: str, **kwargs: Any) -> Any:
        """Answer ``question`` with the conversation so far; the turn is recorded."""
        if not question or not question.strip():
            raise ConfigError("the question is empty")
        self.last_load_s = 0.0
        started = time.perf_counter()
        context = self.context
        prompt, kept = history_prompt(self.record["turns"], question, self.history_budget())
        answer = self.system.run(prompt, context, started=started, **kwargs)
        data = answer.to_dict()
        self.record["turns"].append({
            "question": question,
            "answer": answer.answer,
            "citations": data["citations"],
            "usage": data["usage"],
            "run_id": answer.run_id,
            "elapsed_s": data["elapsed_s"],
            "load_s": round(self.last_load_s, 3),
            "history_turns": kept,
            "partial": answer.partial,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        })
        self.save()
        return answer

    def history_budget(self) -> int:
        """``[sessions] history_tokens``, but at most a quarter of the model's window, so the
        history never crowds out the sources on a small model."""
        if self._window is None:
            from ponder.engine.system import build_adapter, choose_adapter

            try:
                name, _ = choose_adapter(self.system.config)
                adapter, _settings = build_adapter(self.system.config, self.system.plugins, name)
                self._window = int(adapter.model_info().context_window)
            except Exception as exc:  # the run reports a broken adapter; budget without it
                log.debug("no context window for the history budget: %s", exc)
                self._window = 0
        budget = self.settings.history_tokens
        return min(budget, self._window // 4) if self._window else budget

    @property
    def usage(self) -> dict[str, Any]:
        """Calls, tokens and cost of every turn together."""
        total: dict[str, Any] = {"turns": len(self.record["turns"]), "calls": 0,
                                 "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        for turn in self.record["turns"]:
            for key in ("calls", "input_tokens", "output_tokens", "cost_usd"):
                total[key] += turn["usage"].get(key, 0)
        total["cost_usd"] = round(total["cost_usd"], 6)
        return total

    # --- keeping -------------------------------------------------------------------------------
    def save(self, name: str | None = None) -> None:
        """Write the session to the run store (``name`` names an unnamed one, or copies it)."""
        if name is not None:
            name = check_name(name)
            if name != self.name:
                self.name = name
                self.record = {**self.record, "name": name}
                if self._storage is None:
                    self._storage = self.system.open_storage()
                self.store = SessionStore(self._storage, self.settings)
        if self.store is None:
            return
        self.store.put(self.record)

    def transcript(self) -> str:
        """The conversation as Markdown."""
        lines = [f"# Session {self.name or '(unnamed)'}", "",
                 f"Sources: {', '.join(self.sources)}", ""]
        for number, turn in enumerate(self.record["turns"], 1):
            usage = turn["usage"]
            lines += [f"## {number}. {turn['question']}", "", turn["answer"], "",
                      f"*{usage['calls']} calls, {usage['input_tokens']} + "
                      f"{usage['output_tokens']} tokens, ${usage['cost_usd']:.4f}*", ""]
        return "\n".join(lines)

    def close(self) -> None:
        if self._context is not None:
            from ponder.context.chunking import keep_chunks

            keep_chunks(self._context, False)
        if self._storage is not None:
            try:
                self._storage.close()
            except Exception as exc:  # closing is tidying up, never a failure
                log.debug("closing the session store: %s", exc)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<ponder.Session {self.name or '(unnamed)'}: {len(self.record['turns'])} turns "
                f"over {', '.join(self.sources)}>")


def describe(record: dict[str, Any]) -> dict[str, Any]:
    """A session record summarised for ``ponder sessions`` (no turn texts)."""
    turns = record.get("turns", [])
    cost = sum(t.get("usage", {}).get("cost_usd", 0.0) for t in turns)
    return attrs.asdict(_Summary(
        name=record["name"], turns=len(turns), sources=record.get("sources", []),
        updated_at=record.get("updated_at"), expires_at=record.get("expires_at"),
        cost_usd=round(cost, 6),
        last_question=turns[-1]["question"] if turns else None))


@attrs.define
class _Summary:
    name: str
    turns: int
    sources: list[str]
    updated_at: float | None
    expires_at: float | None
    cost_usd: float
    last_question: str | None
