"""Context loading: what the model reads.

``sources`` loads files, directories, globs, stdin and git diffs into a ``Context`` (bad files
listed, never fatal), the module callers import from; it is split into ``documents`` (the data
model), ``reading`` (one file's bytes: binary, oversize, secrets, UTF-8 repair), ``ignore``
(``.gitignore`` and default skips) and ``diffs`` (unified diffs), which it re-exports.
``chunking`` splits it into line-numbered, token-bounded chunks, which ``render`` shows to the
model (the ``Piece`` and ``Chunk`` types, headers, sizes); ``tokens`` estimates sizes for both.
It may import ``ponder.errors`` and ``ponder.support`` only.
"""
