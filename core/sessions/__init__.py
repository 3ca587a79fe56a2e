"""Sessions: a conversation over sources loaded, chunked and indexed once (``ponder chat``,
``ponder ask --session NAME``), kept in the run store (records namespace ``session``) so it
survives restarts and expires after ``[sessions] ttl``. It may import ``errors``, ``support``,
``signatures``, ``context``, ``kernel`` and ``engine``; strategies come from the plugin registry.
"""
