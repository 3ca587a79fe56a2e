"""The ray executor's request ledger: what a worker's LM requests were, kept outside the worker.

An item's usage and call records normally travel back with its result
(:class:`ponder.engine.remote.TaskReport`). A worker that dies (its process killed) takes them
along, yet the provider served, and bills, the requests it made. So each worker also appends
every provider request, as it happens, to a **journal**: a file of its own on its node's disk
(``<tmp>/ponder-ray-ledger/<executor>/<map>/<pid>.jsonl``, one ``os.write`` per event, so the
line is in the kernel's page cache, and survives the process, before the call returns):

- ``sent``, *before* the request leaves, so a request that can have reached the provider is
  always on record;
- ``done`` when its reply came, with the tokens and cost the provider reported (the same figures
  :meth:`ponder.engine.services.Services.predict` charges: one request per usage entry in the
  attempt's dspy usage tracker);
- ``record``: each finished call's record for the run store (without its prompt and reply
  text, which a lost call's record goes without).

Each event carries the item's *token* (``map/index/hand-out``, one per hand-out). When the
item's result arrives, the driver uses it and never reads the journal for that token. When the
worker is lost, the driver reads the token's events (from its own disk, or with a task on the
worker's node) and counts them (:func:`lost_report`): the records of finished calls as they are;
a request that finished inside a call that did not with its reported usage and a record of its
own (role ``<role>:lost``); a request sent whose reply never came as one attempted call with its
*estimated* prompt tokens (≈4 characters a token of the messages sent), no reply tokens, priced
at the input price, recorded with the error ``WorkerLost``. A token is read once, so a request is
never counted twice; a map's journal is deleted when the map ends.

A journal costs a ``json.dumps`` and a ``write`` per event, no message to any process (an actor
ledger that every request waited for cost ≈4 ms of CPU per call on this machine, more than the
call itself). What it cannot survive is the loss of the worker's *node* (its disk goes with it):
those requests are not counted, and the answer says so.

Requests are watched with a dspy callback on each LM of the worker's adapter chain
(``on_lm_start``/``on_lm_end``: dspy calls them around every provider request), so nothing in
the run's services changes; the item a request belongs to is a context variable set for the
item's thread (and copied into the threads of a nested map).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("ponder.run")

#: the token of the item the current thread (or a nested map's thread) runs, set by the worker
CURRENT_ITEM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ponder_ray_item", default=None)

#: where journals live on every node: ``<tmp>/ponder-ray-ledger/<executor id>/<map id>/<pid>``
ROOT = "ponder-ray-ledger"


def journal_root(executor_id: str) -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), ROOT, executor_id)


# --- the worker's side --------------------------------------------------------------------------
class LedgerReporter:
    """A worker's journal writer: the dspy callback on its LMs and its call records."""

    #: journals kept open at once (one per map; older maps are done)
    OPEN_FILES = 4

    def __init__(self, root: str) -> None:
        self.root = root
        self._seq = itertools.count(1)
        self._open: dict[str, tuple[str, int, Any, dict[str, int]]] = {}
        self._files: dict[str, int] = {}
        self._lock = threading.Lock()
        self._warned = False

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning("the ray executor's request journal could not be written (%s): a "
                        "request of a worker lost now may be missed in the counts", exc)

    def _write(self, token: str, event: tuple[Any, ...]) -> None:
        line = (json.dumps([token, event], default=str) + "\n").encode()
        map_id = token.partition("/")[0]
        try:
            with self._lock:
                fd = self._files.get(map_id)
                if fd is None:
                    folder = os.path.join(self.root, map_id)
                    os.makedirs(folder, exist_ok=True)
                    fd = os.open(os.path.join(folder, f"{os.getpid()}.jsonl"),
                                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    self._files[map_id] = fd
                    while len(self._files) > self.OPEN_FILES:
                        os.close(self._files.pop(next(iter(self._files))))
                os.write(fd, line)  # in the page cache when it returns: survives this process
        except OSError as exc:
            self._warn(exc)

    def watch(self, lm: Any, model_info: Any) -> None:
        """Report every request made through ``lm`` (each LM of a fallback chain)."""
        chain = getattr(lm, "chain", None)
        links = [(link.lm, link.model_info) for link in chain.links] if chain is not None \
            else [(lm, model_info)]
        for link_lm, info in links:
            callbacks = getattr(link_lm, "callbacks", None)
            if isinstance(callbacks, list):
                callbacks.append(_RequestWatch(self, info))

    def record(self, record: dict[str, Any]) -> None:
        token = CURRENT_ITEM.get()
        if token is not None:
            kept = {k: v for k, v in record.items() if k not in ("prompt", "reply")}
            self._write(token, ("record", threading.get_ident(), kept))

    def started(self, call_id: str, prompt_tokens: int, cost: float) -> None:
        token = CURRENT_ITEM.get()
        if token is None:
            return
        seq = next(self._seq)
        tracker = _usage_tracker()
        with self._lock:
            self._open[call_id] = (token, seq, tracker, _entry_counts(tracker))
        # written before the request can leave: a request that reached the provider is known
        self._write(token, ("sent", threading.get_ident(), seq, prompt_tokens, cost,
                            _current_role()))

    def ended(self, call_id: str, exception: BaseException | None, model_info: Any,
              prompt_tokens: int) -> None:
        with self._lock:
            opened = self._open.pop(call_id, None)
        if opened is None:
            return
        token, seq, tracker, before = opened
        requests, inp, out = _new_usage(tracker, before)
        if tracker is None and exception is None:  # no usage reported: as Services estimates
            requests, inp, out = 1, prompt_tokens, 0
        cost = model_info.cost(inp, out) if requests else 0.0
        self._write(token, ("done", threading.get_ident(), seq, requests, inp, out, cost))


def read_journal(folder: str, tokens: list[str]) -> dict[str, list[Any]]:
    """The events of ``tokens`` in a map's journal folder (every worker's file on this node);
    a line cut short by a dying writer is skipped."""
    wanted = set(tokens)
    found: dict[str, list[Any]] = {token: [] for token in tokens}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return found
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                for line in fh:
                    try:
                        token, event = json.loads(line)
                    except (ValueError, TypeError):
                        continue
                    if token in wanted:
                        found[token].append(event)
        except OSError:
            continue
    return found


def remove_journal(folder: str) -> None:
    """Delete a map's journal folder; a folder that cannot be removed is left (it is in tmp)."""
    import contextlib

    from ponder.support.fileutils import smart_rmtree

    with contextlib.suppress(OSError):
        smart_rmtree(folder, aggressive=True)


class _RequestWatch:
    """The dspy callback (``on_lm_start``/``on_lm_end``) on one LM of the chain."""

    def __init__(self, reporter: LedgerReporter, model_info: Any) -> None:
        self.reporter = reporter
        self.model_info = model_info
        self._prompts: dict[str, int] = {}

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if CURRENT_ITEM.get() is None:
            return
        tokens = prompt_tokens_of(inputs)
        self._prompts[call_id] = tokens
        self.reporter.started(call_id, tokens, self.model_info.cost(tokens, 0))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None
                  ) -> None:
        tokens = self._prompts.pop(call_id, 0)
        self.reporter.ended(call_id, exception, self.model_info, tokens)

    def __getattr__(self, name: str) -> Any:  # every other dspy hook: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def prompt_tokens_of(inputs: dict[str, Any]) -> int:
    """Estimated tokens of a request's messages (≈4 characters a token, as the provider's
    count of a chat prompt is estimated everywhere else in ponder)."""
    from ponder.context.tokens import estimate_tokens

    messages = inputs.get("messages")
    if isinstance(messages, list) and messages:
        return sum(estimate_tokens(str(m.get("content", "")) if isinstance(m, dict) else str(m))
                   for m in messages)
    return estimate_tokens(str(inputs.get("prompt") or ""))


def _usage_tracker() -> Any:
    import dspy

    return dspy.settings.get("usage_tracker")


def _entry_counts(tracker: Any) -> dict[str, int]:
    data = getattr(tracker, "usage_data", None) or {}
    return {model: len(entries) for model, entries in data.items()}


def _new_usage(tracker: Any, before: dict[str, int]) -> tuple[int, int, int]:
    """The requests (entries with tokens) a tracker gained since ``before``, as
    :func:`ponder.engine.metering.tracker_usage` counts them."""
    requests = inp = out = 0
    for model, entries in (getattr(tracker, "usage_data", None) or {}).items():
        for entry in entries[before.get(model, 0):]:
            i = int(entry.get("prompt_tokens") or 0)
            o = int(entry.get("completion_tokens") or 0)
            if i or o:
                requests, inp, out = requests + 1, inp + i, out + o
    return requests, inp, out


def _current_role() -> str | None:
    """The role of the LM call this request belongs to (its open span's name), if known."""
    from ponder.support.observability import SpanType, _active_tracker

    tracker = _active_tracker.get()
    span = tracker.current_span() if tracker is not None else None
    return span.name if span is not None and span.type == SpanType.LLM else None


def watched_runtime(runtime: Any, reporter: LedgerReporter | None) -> Any:
    """``runtime`` (a :class:`ponder.engine.remote.WorkerRuntime`) with its call records
    written to its journal (its requests are: the worker watches every LM it builds,
    :func:`ponder.engine.system.watch_built_lms`)."""
    if reporter is None or runtime.spec is None:
        return runtime
    build = runtime.services

    def services(budget: Any, calls: list[dict[str, Any]]) -> Any:
        made = build(budget, calls)
        append = made.on_call

        def on_call(record: dict[str, Any]) -> None:
            append(record)
            reporter.record(record)

        made.on_call = on_call
        return made

    runtime.services = services
    return runtime


# --- the driver's side --------------------------------------------------------------------------
class Ledger:
    """The driver's side: where a map's journals are, reading a lost item's events, cleaning up.

    ``where`` maps a worker (``id`` of its actor handle) to a ref of its ``(pid, node id)``,
    asked when the worker was started (its first task, so answered before any item)."""

    def __init__(self, ray: Any, executor_id: str) -> None:
        self.ray = ray
        self.root = journal_root(executor_id)
        self.node = ray.get_runtime_context().get_node_id()
        self.where: dict[int, Any] = {}

    def node_of(self, worker: Any) -> str | None:
        ref = self.where.get(id(worker))
        if ref is None:
            return None
        try:
            return self.ray.get(ref, timeout=5)[1]
        except Exception:  # died before it said where it runs: it ran nothing
            return None

    def read(self, map_id: str, tokens: list[str], node: str | None) -> dict[str, list[Any]]:
        folder = os.path.join(self.root, map_id)
        if node is None or node == self.node:
            return read_journal(folder, tokens)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = self.ray.remote(read_journal).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        return self.ray.get(task.remote(folder, tokens), timeout=60)

    def _nodes(self) -> set[str]:
        nodes = {self.node}
        for ref in list(self.where.values()):
            with contextlib.suppress(Exception):  # not answered (yet): it ran nothing
                nodes.add(self.ray.get(ref, timeout=0)[1])
        return nodes

    def end_map(self, map_id: str) -> None:
        """Delete the map's journals, here and (not waited for) on the workers' other nodes."""
        folder = os.path.join(self.root, map_id)
        for node in self._nodes():
            if node == self.node:
                remove_journal(folder)
                continue
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            with contextlib.suppress(Exception):  # the node is gone, and its disk with it
                self.ray.remote(remove_journal).options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                        node, soft=False)).remote(folder)

    def local_pids(self, workers: list[Any]) -> list[int]:
        """The process ids of ``workers`` that run on this node (their first task's answer;
        a worker that has not answered yet is left out)."""
        pids = []
        for worker in workers:
            ref = self.where.get(id(worker))
            with contextlib.suppress(Exception):  # not answered (yet), or gone
                pid, node = self.ray.get(ref, timeout=0)
                if node == self.node:
                    pids.append(int(pid))
        return pids

    def close(self) -> None:
        remove_journal(self.root)


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait (at most ``timeout`` s) until the processes ``pids`` are gone; the ones still there.

    ``ray.kill`` only asks for an actor's end: its process may run on for a moment, and an item
    it still held may send a request after the driver has given up on it (a request nobody
    would count). Waiting here makes the driver outlive its workers on this node."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        alive = [pid for pid in alive if _running(pid)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed and not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def take_lost(ledger: Ledger, map_id: str, tokens: list[str], node: str | None, services: Any,
              parent_id: str | None, *, reason: str) -> dict[str, int]:
    """Read the journal's events of lost items (``tokens``, on ``node``) and add them to the
    driver's ``services`` (usage, call records, limits) as :func:`ponder.engine.remote.absorb`
    adds a result's report; the counts of what was read."""
    from ponder.engine.remote import absorb

    totals = {"absorbed": 0, "in_flight": 0, "estimated_tokens": 0, "records": 0}
    if not tokens:
        return totals
    try:
        taken = ledger.read(map_id, tokens, node)
    except Exception as exc:
        log.warning("the request journal of a lost ray worker could not be read (%s: its node "
                    "may be gone): the requests of %d lost item(s) are not counted",
                    type(exc).__name__, len(tokens))
        return totals
    adapter = services.names.get("adapter", (None, None))[0]
    model = getattr(services.model_info, "model", None)
    for token in tokens:
        events = taken.get(token) or []
        if events:
            report, counts = lost_report(events, reason=reason, adapter=adapter, model=model)
            absorb(services, report, parent_id)
            for name, value in counts.items():
                totals[name] += value
    return totals


def lost_report(events: Iterable[tuple[Any, ...]], *, reason: str,
                adapter: str | None, model: str | None) -> tuple[Any, dict[str, int]]:
    """A :class:`TaskReport` of what a lost item's worker journaled, and counts
    (``absorbed``: requests with reported usage; ``in_flight``: requests counted with an
    estimate; ``estimated_tokens``)."""
    from ponder.engine.remote import TaskReport

    sent: dict[int, tuple[Any, ...]] = {}
    done: dict[int, tuple[Any, ...]] = {}
    records: list[dict[str, Any]] = []
    uncovered: dict[int, list[int]] = {}  # thread -> done requests no finished call covers yet
    for event in events:
        kind, thread = event[0], event[1]
        if kind == "sent":
            sent[event[2]] = event
        elif kind == "done":
            done[event[2]] = event
            if event[3]:
                uncovered.setdefault(thread, []).append(event[2])
        elif kind == "record":
            records.append(event[2])
            uncovered.pop(thread, None)  # a call's requests run in its thread, then its record
    usage = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
             "retries": sum(int(r.get("retries") or 0) for r in records),
             "cached_calls": sum(1 for r in records if r.get("cached"))}
    for _kind, _thread, _seq, requests, inp, out, cost in done.values():
        usage["calls"] += requests
        usage["input_tokens"] += inp
        usage["output_tokens"] += out
        usage["cost_usd"] += cost
    calls = list(records)
    for seqs in uncovered.values():
        for seq in seqs:
            _k, _t, _s, requests, inp, out, cost = done[seq]
            role = (sent.get(seq) or (None,) * 6)[5] or "call"
            calls.append(_record(f"{role}:lost", adapter, model, inp, out, cost,
                                 f"WorkerLost: the reply came, but the call it belongs to did "
                                 f"not finish before {reason}"))
    in_flight = [event for seq, event in sent.items() if seq not in done]
    estimated = 0
    for _k, _t, _s, prompt_tokens, cost, role in in_flight:
        usage["calls"] += 1
        usage["input_tokens"] += prompt_tokens
        usage["cost_usd"] += cost
        estimated += prompt_tokens
        calls.append(_record(f"{role or 'call'}:lost", adapter, model, prompt_tokens, 0, cost,
                             f"WorkerLost: sent, no reply before {reason}; prompt tokens "
                             "estimated, reply tokens unknown (0)"))
    counts = {"absorbed": sum(e[3] for e in done.values()), "in_flight": len(in_flight),
              "estimated_tokens": estimated, "records": len(records)}
    return TaskReport(usage=usage, calls=calls), counts


def _record(role: str, adapter: str | None, model: str | None, inp: int, out: int, cost: float,
            error: str) -> dict[str, Any]:
    return {"role": role, "adapter": adapter, "model": model, "prompt_chars": 0,
            "reply_chars": 0, "input_tokens": inp, "output_tokens": out, "latency_s": 0.0,
            "cost_usd": cost, "retries": 0, "cached": False, "error": error, "prompt": "",
            "reply": ""}
