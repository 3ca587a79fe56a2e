"""The shared services the seed design names, under its public names.

``retry`` (backoff policy, ``call_with_retry``), ``results`` (typed partial results),
``progress``, ``secrets`` (masking, ``Secret``, log filters), ``observability`` (``Tracker``,
spans, ``track``), ``batch`` (JSONL batch files, a poller, streaming downloads), ``fileutils``
(atomic writes, platform dirs), ``lenient`` and ``dspy_format`` (reading and writing DSPy's reply
formats for weak models and fake providers), ``gcpause`` (the collector paused while the console
starts). This is the bottom layer: it imports only
``ponder.errors`` and itself, so anything above may use it.
"""
