"""The engine: what runs one question end to end.

``system`` (``System``: composes the configured plugins and runs ``ask``), ``services`` (what a
strategy is handed: metered LM calls with retries, limits and spans, a parallel ``map`` with
partial results), ``fallback`` (the adapter chain with circuit breakers), ``cache`` (the LM
response cache) and ``answer`` (``Answer``, ``Draft``, ``Usage``, citations). It may import the
kernel, ``ponder.context``, ``ponder.support``, ``ponder.signatures`` and ``ponder.errors``; it
never imports the CLI, a plugin module by name, or ``ponder.testing``.
"""
