"""Building a ``dspy.LM`` on dspy's native engine (``dspy.lm15``) instead of litellm.

Why: ``import litellm`` costs about 2 s of start-up before the first request can leave, and a
litellm call about 8-12 ms of client CPU (its cost and model-info lookups, the OpenAI SDK's
request building). DSPy 3.4 bundles lm15, a small HTTP client per wire format (OpenAI chat,
Gemini, Anthropic, ...): measured here about 3 ms of CPU per call and no litellm import at all
(``docs/performance.md``, "Native LM engine").

``engine="auto"``: a call the native route can carry goes native; a call it cannot (an
``extra`` option lm15 has no field for, such as ``extra_headers``) falls back to litellm for that
call, at the same address with the same key. A server ponder declared with no such option gets
``engine="lm15"`` instead, which skips dspy's per-call plan (:func:`native_engine`). Errors
come back as dspy's ``LM*Error`` classes
with ``status`` and ``retry_after``, which :mod:`ponder.support.retry` reads (as it reads
litellm's).

**OpenAI-compatible servers** are declared to lm15 with :func:`declare_openai_compatible`: one
provider per base URL (lm15 binds a declared provider to its address), speaking the chat
completions wire with ``max_tokens`` (the field every such server reads; lm15's built-in
``openai`` route sends OpenAI's newer ``max_completion_tokens``, which older vLLM, llama.cpp
and LM Studio builds ignore). Registration is per process and idempotent.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

from ponder.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import dspy

#: Keys of ``extra`` that would add a second retry layer or a response cache under ponder's.
RESERVED_EXTRA = frozenset({"num_retries", "max_retries", "cache", "engine", "model"})

#: Prefix of the lm15 provider ids ponder declares for OpenAI-compatible base URLs.
PROVIDER_PREFIX = "ponder-oai"


def _local_metadata() -> None:
    """dspy's model-metadata snapshot (and litellm, if a call falls back) read the bundled map
    instead of fetching one from the web (a 5 s time-out offline)."""
    from ponder.support.offline import use_bundled_model_map

    use_bundled_model_map()


def provider_id(base_url: str) -> str:
    """The lm15 provider id ponder declares for ``base_url`` (stable, one per address)."""
    digest = hashlib.sha1(base_url.rstrip("/").encode()).hexdigest()[:10]
    return f"{PROVIDER_PREFIX}-{digest}"


def declare_openai_compatible(base_url: str) -> str:
    """Declare the server at ``base_url`` to dspy's native engine; returns its provider id."""
    from dspy import lm15

    pid = provider_id(base_url)
    definition = lm15.ProviderDefinition.chat(
        lm15.AccessPolicy(provider=pid, base_url=base_url.rstrip("/")),
        compat=lm15.OpenAIChatCompat(max_tokens_field="max_tokens"),
        note="an OpenAI-compatible server declared by ponder's openai_compatible adapter",
    )
    # Self-hosted models: no function calling / reasoning / JSON schema unless stated, so DSPy's
    # adapters use plain prompts (what such servers handle best).
    support = lm15.ModelSupport(function_calling=False, reasoning=False, response_schema=False)
    lm15.register_provider(definition, supports=support)
    return pid


def build_dspy_lm(
    model: str,
    *,
    engine: str,
    api_key: str | None = None,
    api_base: str | None = None,
    temperature: float | None = 0.0,
    max_tokens: int | None = 1024,
    timeout_s: float | None = 120.0,
    extra: dict[str, Any] | None = None,
) -> dspy.LM:
    """The one place ponder constructs a ``dspy.LM``, on ``engine`` (``"auto"``: native, litellm
    only for calls lm15 cannot carry; ``"litellm"``: always litellm).

    Always ``num_retries=0`` (ponder retries) and ``cache=False`` (ponder caches); ``extra`` may
    not set either (nor the engine or model). ``api_key``/``api_base`` are only passed when set,
    so litellm's own env-var lookup still applies.
    """
    _local_metadata()
    import dspy

    kwargs: dict[str, Any] = dict(extra or {})
    reserved = sorted(RESERVED_EXTRA.intersection(kwargs))
    if reserved:
        raise ConfigError(
            f"[adapter] extra may not set {reserved}: ponder owns retries and caching")
    if api_key is not None:
        kwargs["api_key"] = api_key
    if api_base is not None:
        kwargs["api_base"] = api_base
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    return dspy.LM(model, temperature=temperature, max_tokens=max_tokens, num_retries=0,
                   cache=False, engine=engine, **kwargs)


def build_native_lm(model: str, **options: Any) -> dspy.LM:
    """A ``dspy.LM`` on the native engine (litellm only for calls it cannot carry); ``options``
    are :func:`build_dspy_lm`'s (``api_key``, ``api_base``, ``temperature``, ``max_tokens``,
    ``timeout_s``, ``extra``)."""
    return build_dspy_lm(model, engine=native_engine(model, options.get("extra")), **options)


def native_engine(model: str, extra: dict[str, Any] | None) -> str:
    """``"lm15"`` for a server ponder declared (:func:`declare_openai_compatible`) when ``extra``
    sets no client option only litellm carries (``extra_headers``, ...); else ``"auto"``.

    Why: under ``"auto"`` dspy *plans* every call before making it (it builds the whole request
    and JSON-encodes it, the chunk included, to learn whether lm15 would refuse it, then builds
    it again to send it): ~1 ms of CPU per call with a 30,000-token chunk. For a declared
    provider that plan can only pass or raise the refusal the call itself raises (dspy never
    falls back to litellm past a declaration's refusal), so skipping it changes nothing but the
    cost. A litellm-only client option still needs ``"auto"``: that call goes to litellm.
    """
    if not model.startswith(PROVIDER_PREFIX + "-"):
        return "auto"  # gemini: lm15 refusals (a thinking budget) fall back to litellm per call
    try:
        from dspy.clients.backend_selection import CLIENT_KEYS, NATIVE_CLIENT_KEYS
    except ImportError:  # another dspy: keep its own per-call choice
        return "auto"
    litellm_only = set(CLIENT_KEYS) - set(NATIVE_CLIENT_KEYS)
    return "auto" if litellm_only.intersection(extra or {}) else "lm15"


def snapshot_model_info(provider: str, model: str) -> dict[str, Any]:
    """dspy's bundled model metadata for ``provider``/``model`` (window, prices, reasoning
    support), without importing litellm; ``{}`` when unknown."""
    _local_metadata()
    from dspy.clients import model_metadata

    try:
        return dict(model_metadata.model_info(provider, model))
    except Exception:  # advisory data: an unreadable snapshot means "unknown"
        return {}


# --- dspy's truncation warning, in ponder's words ----------------------------------------------
_truncation_lock = threading.Lock()
_truncation_state: dict[str, Any] = {"filter": None, "reported": False}


def report_truncation_once(adapter: str, max_output_tokens: int) -> None:
    """Replace dspy's "LM response was truncated; increase max_tokens" warning (one per call,
    naming dspy's parameter) with one line per process naming ponder's setting.

    A logging filter on dspy's ``dspy.clients.lm`` logger drops those records and logs, the first
    time only, a warning on the ``ponder`` logger; the CLI shows it above the progress bar. The
    last adapter built names the setting (one adapter per run is the common case).
    """
    import logging

    with _truncation_lock:
        _truncation_state.update(adapter=adapter, max_output_tokens=max_output_tokens)
        if _truncation_state["filter"] is not None:
            return

        def keep(record: logging.LogRecord) -> bool:
            if "truncated" not in str(record.msg):
                return True
            with _truncation_lock:
                first = not _truncation_state["reported"]
                _truncation_state["reported"] = True
            if first:
                logging.getLogger("ponder").warning(
                    "the model's reply hit the output limit (%s tokens) and was cut off; answers "
                    "may be incomplete: raise [adapter] max_output_tokens (adapter %r), e.g. "
                    "--set adapter.max_output_tokens=%d (reported once)",
                    _truncation_state["max_output_tokens"], _truncation_state["adapter"],
                    _truncation_state["max_output_tokens"] * 2)
            return False

        logging.getLogger("dspy.clients.lm").addFilter(keep)
        _truncation_state["filter"] = keep
