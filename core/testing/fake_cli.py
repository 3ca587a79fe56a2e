"""The fake provider's command line: ``python -m ponder.testing.fake_provider [options]``.

Benchmarks and the docs' walk-throughs run the fake provider in its own process (so its CPU is
not the client's); this module turns flags into a :class:`FakeProviderConfig` (a bad one exits 2
with the setting named), prints the URL as the first stdout line, and serves until SIGTERM,
SIGINT or the lifetime ends. It is kept out of the server module so the argument table, which
mirrors every setting, does not crowd the request path. ``ponder.testing.fake_provider.main``
calls :func:`main` with the provider class.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ponder.testing.fake_settings import (
    _LOOPBACK_HOSTS,
    FAULT_KINDS,
    MODES,
    FakeProviderConfig,
)

__all__ = ["main"]


def _parse_kv(text: str, sep: str) -> tuple[str, str]:
    key, found, value = text.partition(sep)
    if not found or not key:
        raise argparse.ArgumentTypeError(f"expected KEY{sep}VALUE, got {text!r}")
    return key, value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ponder.testing.fake_provider",
        description="Loopback fake OpenAI-compatible provider. Prints its URL as the first line.",
    )
    p.add_argument("--host", default="127.0.0.1", choices=_LOOPBACK_HOSTS)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--mode", choices=MODES, default="rules")
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="REGEX=>REPLY",
        type=lambda s: _parse_kv(s, "=>"),
        help="rules mode: reply REPLY when REGEX matches",
    )
    p.add_argument("--default-reply", default="OK")
    p.add_argument(
        "--needle",
        action="append",
        default=[],
        metavar="KEY=ANSWER",
        type=lambda s: _parse_kv(s, "="),
        help="oracle mode: a needle and its answer text",
    )
    p.add_argument("--oracle-miss", default="NOT FOUND")
    p.add_argument(
        "--no-dspy-format", action="store_true", help="reply plain text even to DSPy prompts"
    )
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument(
        "--latency",
        default="0",
        metavar="A[,B[,C]]",
        help="seconds: A + B*prompt_tokens + C*completion_tokens",
    )
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS), metavar="KIND,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fail-first-n", type=int, default=0)
    p.add_argument("--fail-first-kind", choices=FAULT_KINDS, default="server_error")
    p.add_argument("--no-fault-header", action="store_true", help="ignore X-Fake-Fault headers")
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--timeout-sleep", type=float, default=30.0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--max-in-flight", type=int, default=None)
    p.add_argument("--tpm", type=int, default=None)
    p.add_argument("--max-lifetime", type=float, default=600.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument(
        "--rlm-root", action="store_true", help="answer dspy.RLM root prompts with scripted code"
    )
    p.add_argument("--rlm-pattern", default=None, help="regex the scripted RLM root searches for")
    p.add_argument("--rlm-max-hits", type=int, default=12)
    p.add_argument("--print-stats", action="store_true", help="print final stats JSON to stderr")
    return p


def main(provider_cls: Callable[[FakeProviderConfig], Any],
         argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve a ``provider_cls(config)`` until killed or its lifetime ends; exit
    2 on a bad setting. The class comes in as an argument so this module needs no import of
    the server's (that module imports this one for its ``main``)."""
    args = _build_parser().parse_args(argv)
    try:
        config = FakeProviderConfig(
            host=args.host,
            port=args.port,
            model=args.model,
            mode=args.mode,
            rules=args.rule,
            default_reply=args.default_reply,
            needles=dict(args.needle),
            oracle_miss=args.oracle_miss,
            dspy_format=not args.no_dspy_format,
            embedding_dim=args.embedding_dim,
            latency=[x for x in args.latency.split(",") if x.strip()],
            jitter=args.jitter,
            fault_rate=args.fault_rate,
            fault_kinds=[k.strip() for k in args.fault_kinds.split(",") if k.strip()],
            seed=args.seed,
            fail_first_n=args.fail_first_n,
            fail_first_kind=args.fail_first_kind,
            fault_header=not args.no_fault_header,
            retry_after=args.retry_after,
            timeout_sleep=args.timeout_sleep,
            api_key=args.api_key,
            max_in_flight=args.max_in_flight,
            tpm=args.tpm,
            max_lifetime=args.max_lifetime,
            max_requests=args.max_requests,
            rlm_root=args.rlm_root,
            rlm_pattern=args.rlm_pattern,
            rlm_max_hits=args.rlm_max_hits,
        )
    except (TypeError, ValueError) as exc:
        print(f"fake_provider: invalid configuration: {exc}", file=sys.stderr)
        return 2
    provider = provider_cls(config).start()

    def _on_signal(signum: int, _frame: Any) -> None:
        provider._begin_stop("stopped")

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, _on_signal)
    print(provider.url, flush=True)
    try:
        while not provider.wait(0.5):  # bounded by max_lifetime
            pass
    finally:
        provider.stop()
        if args.print_stats:
            print(json.dumps(provider.stats()), file=sys.stderr, flush=True)
    return 0

