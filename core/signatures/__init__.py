"""Typed signatures: the ML types (``Probability``, ``ConfidenceLabel``, ``Embedding(dim)``) that
signature fields may use, validated where DSPy drops the constraints (``schema``), and signature
strings such as ``"question: str -> answer: str, confidence: Probability"`` parsed into DSPy
signatures (``parse``). A leaf beside ``support``: it imports only ``ponder.errors`` and
``ponder.support`` (and dspy/pydantic inside functions).
"""
