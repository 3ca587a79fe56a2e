"""The ``bm25`` retriever: lexical ranking of chunks with BM25 (the ``bm25s`` library).

**What is indexed.** Each chunk's pieces as plain text (the path, then the lines; no line-number
prefixes, which would only add noise), cut into tokens by :func:`tokenize`, which suits code and
prose alike: every word or identifier is lower-cased and kept whole, and identifiers are also
split at underscores and camelCase humps, so ``MAGIC_PORT`` is indexed as ``magic_port``,
``magic`` and ``port`` (a question about "the magic port" finds it, and so does one naming
``MAGIC_PORT``), and ``parseHttpRequest`` as ``parsehttprequest``, ``parse``, ``http`` and
``request``. Stop words (``stopwords``, English by default) are dropped from chunks and queries
alike, as are single letters.

**Search.** ``search(query, k)`` scores every chunk against the query's tokens and returns the
best ``min(k, chunks)``, best first; chunks that share no token with the query score 0 and come
last, in document order (ties always keep document order, so results are deterministic). An
empty index returns ``[]``.

**Persistence.** ``dump()`` writes the index itself (the BM25 score matrix and the vocabulary),
not the text: a JSON header then raw little-endian arrays. ``load(data, chunks)`` reads it back
with ``numpy.frombuffer``: no pickle, so a stored index can never run code, and loading costs
a fraction of indexing. The kernel stores it per settings and chunk digest (see
:meth:`ponder.engine.services.Services.index`).

Config example::

    [retriever]
    name = "bm25"
    # k1 = 1.5                # term-frequency saturation (>= 0)
    # b = 0.75                # length normalisation, 0..1
    # method = "lucene"       # lucene, robertson, atire, bm25l, bm25+
    # delta = 0.5             # bm25l / bm25+ only
    # stopwords = "en_plus"   # en_plus (English with question words), en, de, fr, es, …, none
    # extra_stopwords = []    # more words to ignore, e.g. ["self", "return"]

Needs the ``bm25`` extra: ``pip install -c constraints.txt -e '.[bm25]'``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import PonderError

PONDER_PLUGIN_API = 1

#: bm25s's scoring variants (``method``).
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")

#: stop-word list names and the bm25s constant each selects.
STOPWORD_LISTS: dict[str, str] = {
    "en": "STOPWORDS_EN", "english": "STOPWORDS_EN",
    "en_plus": "STOPWORDS_EN_PLUS", "english_plus": "STOPWORDS_EN_PLUS",
    "de": "STOPWORDS_GERMAN", "german": "STOPWORDS_GERMAN",
    "nl": "STOPWORDS_DUTCH", "dutch": "STOPWORDS_DUTCH",
    "fr": "STOPWORDS_FRENCH", "french": "STOPWORDS_FRENCH",
    "es": "STOPWORDS_SPANISH", "spanish": "STOPWORDS_SPANISH",
    "pt": "STOPWORDS_PORTUGUESE", "portuguese": "STOPWORDS_PORTUGUESE",
    "it": "STOPWORDS_ITALIAN", "italian": "STOPWORDS_ITALIAN",
    "ru": "STOPWORDS_RUSSIAN", "russian": "STOPWORDS_RUSSIAN",
    "sv": "STOPWORDS_SWEDISH", "swedish": "STOPWORDS_SWEDISH",
    "no": "STOPWORDS_NORWEGIAN", "norwegian": "STOPWORDS_NORWEGIAN",
    "da": "STOPWORDS_DANISH", "danish": "STOPWORDS_DANISH",
    "tr": "STOPWORDS_TURKISH", "turkish": "STOPWORDS_TURKISH",
}
NO_STOPWORDS = "none"

INSTALL_HINT = "pip install -c constraints.txt -e '.[bm25]'  (or: pip install bm25s)"

#: bumped when :func:`tokenize` changes, so an index stored by an older ponder is rebuilt
TOKENIZER_VERSION = 1

_FORMAT = "ponder-bm25"
_FORMAT_VERSION = 1
#: dtypes a stored index may declare (never "O": nothing in a dump is a Python object)
_SAFE_DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "<u4", "<u8"})
_ARRAYS = ("data", "indices", "indptr", "nonoccurrence")


# --- tokenisation -------------------------------------------------------------------------------
_WORD = re.compile(r"\w+")
# camelCase humps: "HTTPServer" -> HTTP, Server; "parseJSON2" -> parse, JSON, 2
_HUMP = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _expand(word: str) -> tuple[str, ...]:
    """The tokens of one ``\\w+`` run: the whole word, its ``_`` parts, their camelCase humps."""
    whole = word.strip("_")
    if not whole:
        return ()
    tokens = [whole.lower()]
    parts = [part for part in whole.split("_") if part]
    if len(parts) > 1:
        tokens += [part.lower() for part in parts]
    for part in parts:
        if not part.isascii():
            continue  # camelCase is an ASCII convention; other scripts stay whole
        humps = _HUMP.findall(part)
        if len(humps) > 1:
            tokens += [hump.lower() for hump in humps]
    return tuple(token for token in dict.fromkeys(tokens)
                 if len(token) > 1 or token.isdigit())


def make_tokenizer(stopwords: frozenset[str] = frozenset()) -> Callable[[str], list[str]]:
    """A :func:`tokenize` that drops ``stopwords`` and caches each word's expansion."""
    cache: dict[str, tuple[str, ...]] = {}

    def tokenize_text(text: str) -> list[str]:
        out: list[str] = []
        for word in _WORD.findall(text):
            tokens = cache.get(word)
            if tokens is None:
                if len(cache) > 200_000:  # bounded: a huge corpus of unique words
                    cache.clear()
                tokens = cache[word] = tuple(t for t in _expand(word) if t not in stopwords)
            out.extend(tokens)
        return out

    return tokenize_text


def tokenize(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Lower-cased tokens of ``text`` for code and prose.

    Each word or identifier is kept whole and also split at underscores and camelCase humps:
    ``tokenize("MAGIC_PORT = 48213")`` is ``["magic_port", "magic", "port", "48213"]``.
    Single letters and ``stopwords`` are dropped.
    """
    return make_tokenizer(stopwords)(text)


def chunk_text(chunk: Any) -> str:
    """What is indexed for a chunk: each piece's path, then its lines (no line numbers)."""
    pieces = getattr(chunk, "pieces", None)
    if pieces is None:  # not a ponder Chunk: whatever it renders as
        render = getattr(chunk, "render", None)
        return render() if callable(render) else str(chunk)
    return "\n\n".join(f"{piece.path}\n{piece.text}" for piece in pieces)


# --- settings -----------------------------------------------------------------------------------
def _check_stopwords(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if value != NO_STOPWORDS and value not in STOPWORD_LISTS:
        names = ", ".join(sorted({NO_STOPWORDS, *STOPWORD_LISTS}))
        raise ValueError(f"'{attribute.name}' must be one of {names}; got {value!r}")


@attrs.define
class BM25Settings:
    """Settings of the ``bm25`` retriever."""

    #: term-frequency saturation: higher lets repeated terms count for longer
    k1: float = attrs.field(default=1.5, validator=[attrs.validators.ge(0.0),
                                                    attrs.validators.le(10.0)])
    #: document-length normalisation: 0 none, 1 full
    b: float = attrs.field(default=0.75, validator=[attrs.validators.ge(0.0),
                                                    attrs.validators.le(1.0)])
    #: the BM25 variant (bm25s's ``method``)
    method: str = attrs.field(default="lucene", validator=attrs.validators.in_(METHODS))
    #: the lower bound on term frequency's contribution, for bm25l and bm25+ only
    delta: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0),
                                                       attrs.validators.le(10.0)])
    #: a stop-word list: "en_plus" (English, with question words), "en", "de", "fr", …, "none"
    stopwords: str = attrs.field(default="en_plus", validator=_check_stopwords)
    #: more words to drop from chunks and queries (lower-cased)
    extra_stopwords: list[str] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(attrs.validators.instance_of(str)))


def _import_bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise PonderError(
            f"the bm25 retriever needs the bm25s package ({exc}); install it with: "
            f"{INSTALL_HINT}"
        ) from None
    # bm25s sets its logger to DEBUG; keep its chatter out of ponder's log handlers
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


# --- the retriever ------------------------------------------------------------------------------
class BM25Retriever:
    """BM25 over chunks; see the module docstring."""

    name = "bm25"

    def __init__(self, settings: BM25Settings | None = None) -> None:
        self.settings = settings or BM25Settings()
        self._chunks: list[Any] = []
        self._model: Any = None  # a bm25s.BM25, or None when no chunk has a token
        self._tokenize = make_tokenizer(self._stopwords())

    def _stopwords(self) -> frozenset[str]:
        extra = {word.lower() for word in self.settings.extra_stopwords}
        name = self.settings.stopwords
        if name == NO_STOPWORDS:
            return frozenset(extra)
        # the lists are tuples in bm25s.stopwords; importing it imports bm25s (numpy, scipy),
        # so it happens here, when a retriever is made, never when the plugin is imported
        bm25s = _import_bm25s()
        return frozenset(getattr(bm25s.stopwords, STOPWORD_LISTS[name])) | extra

    def _new_model(self) -> Any:
        bm25s = _import_bm25s()
        s = self.settings
        return bm25s.BM25(k1=s.k1, b=s.b, delta=s.delta, method=s.method, backend="numpy")

    # --- Retriever ----------------------------------------------------------------------------
    def index(self, chunks: Sequence[Any]) -> None:
        self._chunks = list(chunks)
        self._model = None
        corpus = [self._tokenize(chunk_text(chunk)) for chunk in self._chunks]
        if not any(corpus):
            return
        model = self._new_model()
        model.index(corpus, show_progress=False)
        self._model = model

    def search(self, query: str, k: int) -> list[tuple[Any, float]]:
        if not self._chunks or k <= 0:
            return []
        import numpy as np

        scores = np.zeros(len(self._chunks), dtype=np.float32)
        if self._model is not None:
            vocab = self._model.vocab_dict
            ids = sorted({vocab[t] for t in self._tokenize(query) if t in vocab and t})
            if ids:
                scores = self._model.get_scores_from_ids(ids)
        order = np.argsort(-scores, kind="stable")[: min(k, len(self._chunks))]
        return [(self._chunks[i], float(scores[i])) for i in order]

    # --- persistence --------------------------------------------------------------------------
    def _signature(self) -> dict[str, Any]:
        s = self.settings
        return {"k1": s.k1, "b": s.b, "method": s.method, "delta": s.delta,
                "stopwords": s.stopwords, "extra_stopwords": sorted(s.extra_stopwords),
                "tokenizer": TOKENIZER_VERSION}

    def dump(self) -> bytes:
        """The index as bytes: a JSON header, then the score matrix's raw arrays."""
        header: dict[str, Any] = {"format": _FORMAT, "version": _FORMAT_VERSION,
                                  "chunks": len(self._chunks), "settings": self._signature(),
                                  "vocab": None, "num_docs": 0, "arrays": []}
        blobs: list[bytes] = []
        model = self._model
        if model is not None:
            vocab = sorted(model.vocab_dict.items(), key=lambda item: item[1])
            if [i for _, i in vocab] != list(range(len(vocab))):
                raise ValueError("bm25: the vocabulary ids are not 0..n-1; cannot dump")
            header["vocab"] = [token for token, _ in vocab]
            header["num_docs"] = int(model.scores["num_docs"])
            arrays = {"data": model.scores["data"], "indices": model.scores["indices"],
                      "indptr": model.scores["indptr"],
                      "nonoccurrence": getattr(model, "nonoccurrence_array", None)}
            for name in _ARRAYS:
                array = arrays[name]
                if array is None:
                    continue
                array = array.astype(array.dtype.newbyteorder("<"), copy=False)
                header["arrays"].append({"name": name, "dtype": array.dtype.str,
                                         "count": int(array.size)})
                blobs.append(array.tobytes())
        from ponder.plugins._common import pack_index

        return pack_index(header, *blobs)

    def load(self, data: bytes, chunks: Sequence[Any]) -> None:
        """Restore an index made by :meth:`dump` over the same ``chunks``.

        Raises ValueError when the data is not such an index, was made with other settings, or
        for a different number of chunks (the caller then indexes afresh).
        """
        import numpy as np

        header, offset = _read_header(data)
        chunks = list(chunks)
        if header.get("settings") != self._signature():
            raise ValueError("bm25: the stored index was built with other settings")
        if header.get("chunks") != len(chunks):
            raise ValueError(f"bm25: the stored index holds {header.get('chunks')} chunks, "
                             f"not {len(chunks)}")
        arrays: dict[str, Any] = {}
        for spec in header.get("arrays", []):
            name, dtype, count = spec.get("name"), spec.get("dtype"), spec.get("count")
            if name not in _ARRAYS or dtype not in _SAFE_DTYPES or not isinstance(count, int) \
                    or count < 0:
                raise ValueError(f"bm25: bad array entry in the stored index: {spec!r}")
            size = np.dtype(dtype).itemsize * count
            if offset + size > len(data):
                raise ValueError("bm25: the stored index is truncated")
            arrays[name] = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset)
            offset += size
        if offset != len(data):
            raise ValueError("bm25: the stored index has trailing bytes")

        model = None
        vocab = header.get("vocab")
        if vocab is not None:
            num_docs = header.get("num_docs")
            if (not isinstance(vocab, list) or num_docs != len(chunks)
                    or not {"data", "indices", "indptr"} <= arrays.keys()):
                raise ValueError("bm25: the stored index is incomplete")
            indptr = arrays["indptr"]
            if indptr.size < 1 or int(indptr[-1]) != arrays["data"].size \
                    or arrays["indices"].size != arrays["data"].size:
                raise ValueError("bm25: the stored score matrix is inconsistent")
            if arrays["indices"].size and int(arrays["indices"].max()) >= len(chunks):
                raise ValueError("bm25: the stored score matrix points past the chunks")
            model = self._new_model()
            model.scores = {"data": arrays["data"], "indices": arrays["indices"],
                            "indptr": indptr, "num_docs": num_docs}
            model.vocab_dict = {str(token): i for i, token in enumerate(vocab)}
            model.unique_token_ids_set = set(model.vocab_dict.values())
            model.nonoccurrence_array = arrays.get("nonoccurrence")
            if self.settings.method in ("bm25l", "bm25+") and model.nonoccurrence_array is None:
                raise ValueError("bm25: the stored index lacks its non-occurrence array")
        self._chunks = chunks
        self._model = model


def _read_header(data: bytes) -> tuple[dict[str, Any], int]:
    from ponder.plugins._common import read_index_header

    return read_index_header(data, owner="bm25", fmt=_FORMAT, version=_FORMAT_VERSION)


@hookimpl
def ponder_register_retrievers(register):
    register("bm25", BM25Retriever, settings=BM25Settings)
