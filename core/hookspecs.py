"""The hook specifications: the whole contract between the kernel and a plugin.

Every kind of component is contributed through one *collect-style* hook: the kernel calls it
with a ``register`` callback and the plugin calls ``register`` once per thing it provides::

    from ponder import hookimpl

    @hookimpl
    def ponder_register_strategies(register):
        register("shout", ShoutStrategy, settings=ShoutSettings)

``register(name, factory, *, settings=None)``:

- ``name``: what users write in config (``[strategy] name = "shout"``) and on the command line;
- ``factory``: a callable taking the validated settings instance (or nothing, when ``settings``
  is None) and returning the component (see :mod:`ponder.kinds` for what each kind provides);
- ``settings``: an ``attrs`` class describing the plugin's own settings. The kernel validates
  the config section against it and reports errors with the file and dotted key path.

A plugin module may state the plugin API it was written for with a module-level
``PONDER_PLUGIN_API = 1``; a mismatch is a clear error naming plugin, required and actual version.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT_NAME = "ponder"

#: Bumped when a hook's signature or a kind's protocol changes incompatibly.
PLUGIN_API_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback handed to every ``ponder_register_*`` hook."""

    def __call__(self, name: str, factory: Any, *, settings: type | None = None) -> None: ...


@hookspec
def ponder_register_adapters(register: Register) -> None:
    """Register adapters: factories returning a :class:`ponder.kinds.Adapter`.

    Example::

        @hookimpl
        def ponder_register_adapters(register):
            register("gateway", GatewayAdapter, settings=GatewaySettings)
    """


@hookspec
def ponder_register_strategies(register: Register) -> None:
    """Register strategies: factories returning a :class:`ponder.kinds.Strategy`.

    Example::

        @hookimpl
        def ponder_register_strategies(register):
            register("map_reduce", MapReduceStrategy, settings=MapReduceSettings)
    """


@hookspec
def ponder_register_retrievers(register: Register) -> None:
    """Register retrievers: factories returning a :class:`ponder.kinds.Retriever`.

    Example::

        @hookimpl
        def ponder_register_retrievers(register):
            register("bm25", BM25Retriever)
    """


@hookspec
def ponder_register_predictors(register: Register) -> None:
    """Register predictors: factories returning a :class:`ponder.kinds.Predictor`.

    Example::

        @hookimpl
        def ponder_register_predictors(register):
            register("chain_of_thought", ChainOfThoughtPredictor)
    """


@hookspec
def ponder_register_storage(register: Register) -> None:
    """Register storage backends: factories returning a :class:`ponder.kinds.Storage`.

    Example::

        @hookimpl
        def ponder_register_storage(register):
            register("sqlite", SQLiteStorage, settings=SQLiteSettings)
    """


@hookspec
def ponder_register_tools(register: Register) -> None:
    """Register tools for agent predictors: factories returning a :class:`ponder.kinds.Tool`.

    Example::

        class WordCount:
            def make(self, context):
                texts = {doc.path: doc.text for doc in context.documents}

                def word_count(path: str) -> str:
                    \"\"\"How many words the file at ``path`` has.\"\"\"
                    return str(len(texts.get(path, "").split()))
                return word_count

        @hookimpl
        def ponder_register_tools(register):
            register("word_count", WordCount)
    """


@hookspec
def ponder_register_commands(cli: Any) -> None:
    """Add subcommands to the ``ponder`` command line (``cli`` is a :class:`click.Group`).

    Example::

        import click

        @hookimpl
        def ponder_register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello from my plugin")
    """


#: kind name -> hook name, for every collect-style register hook.
KIND_HOOKS: dict[str, str] = {
    "adapter": "ponder_register_adapters",
    "strategy": "ponder_register_strategies",
    "retriever": "ponder_register_retrievers",
    "predictor": "ponder_register_predictors",
    "storage": "ponder_register_storage",
}
#: the kinds a config section selects one of (``[adapter] name = …``)
KINDS: tuple[str, ...] = tuple(KIND_HOOKS)
#: kinds a run uses several of, named in a component's settings (``[predictor] tools = […]``)
COLLECTION_HOOKS: dict[str, str] = {"tool": "ponder_register_tools"}
ALL_KIND_HOOKS: dict[str, str] = {**KIND_HOOKS, **COLLECTION_HOOKS}
