"""Typed signatures: the ML types (``Probability``, ``ConfidenceLabel``, ``Embedding(dim)``) that
signature fields may use, validated where DSPy drops the constraints. A leaf beside ``support``:
it imports only ``ponder.errors`` (and dspy/pydantic inside functions).
"""
