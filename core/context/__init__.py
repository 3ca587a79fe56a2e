"""Context loading: what the model reads.

``sources`` loads files, directories, globs, stdin and git diffs into a ``Context`` (bad files
listed, never fatal); ``chunking`` splits it into line-numbered, token-bounded chunks; ``tokens``
estimates sizes for both. It may import ``ponder.errors`` and ``ponder.support`` only.
"""
