"""The kernel: the whole contract between ponder and its plugins.

``hookspecs`` (the hooks and the ``hookimpl`` marker), ``kinds`` (the protocol each kind of
component implements), ``registry`` (frozen name -> factory maps), ``loader`` (entry points and
in-house modules into registries) and ``config`` (TOML, environment and flags into validated
settings, each value with its origin). It may import ``ponder.errors`` and ``ponder.support``,
never the engine, the context loader, the CLI or any plugin: a plugin author reads these five
modules and nothing else.
"""
