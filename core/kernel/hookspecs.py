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
  is None) and returning the component (see :mod:`ponder.kernel.kinds` for what each kind provides);
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
    """Register adapters: factories returning a :class:`ponder.kernel.kinds.Adapter`.

    Example::

        @hookimpl
        def ponder_register_adapters(register):
            register("gateway", GatewayAdapter, settings=GatewaySettings)
    """


@hookspec
def ponder_register_strategies(register: Register) -> None:
    """Register strategies: factories returning a :class:`ponder.kernel.kinds.Strategy`.

    Example::

        @hookimpl
        def ponder_register_strategies(register):
            register("map_reduce", MapReduceStrategy, settings=MapReduceSettings)
    """


@hookspec
def ponder_register_retrievers(register: Register) -> None:
    """Register retrievers: factories returning a :class:`ponder.kernel.kinds.Retriever`.

    Example::

        @hookimpl
        def ponder_register_retrievers(register):
            register("bm25", BM25Retriever)
    """


@hookspec
def ponder_register_predictors(register: Register) -> None:
    """Register predictors: factories returning a :class:`ponder.kernel.kinds.Predictor`.

    Example::

        @hookimpl
        def ponder_register_predictors(register):
            register("chain_of_thought", ChainOfThoughtPredictor)
    """


@hookspec
def ponder_register_storage(register: Register) -> None:
    """Register storage backends: factories returning a :class:`ponder.kernel.kinds.Storage`.

    Example::

        @hookimpl
        def ponder_register_storage(register):
            register("sqlite", SQLiteStorage, settings=SQLiteSettings)
    """


@hookspec
def ponder_register_tools(register: Register) -> None:
    """Register tools for agent predictors: factories returning a :class:`ponder.kernel.kinds.Tool`.

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
def ponder_register_metrics(register: Register) -> None:
    """Register eval metrics: factories returning a :class:`ponder.kernel.kinds.Metric`.

    Example::

        @hookimpl
        def ponder_register_metrics(register):
            register("exact_match", ExactMatch, settings=ExactMatchSettings)
    """


@hookspec
def ponder_register_optimizers(register: Register) -> None:
    """Register optimizers: factories returning a :class:`ponder.kernel.kinds.Optimizer`.

    Example::

        @hookimpl
        def ponder_register_optimizers(register):
            register("random", RandomSearch, settings=RandomSettings)
    """


@hookspec
def ponder_register_executors(register: Register) -> None:
    """Register executors: factories returning a :class:`ponder.kernel.kinds.Executor`.

    Example::

        @hookimpl
        def ponder_register_executors(register):
            register("threads", ThreadExecutor)
    """


@hookspec
def ponder_register_exporters(register: Register) -> None:
    """Register telemetry exporters: factories returning a :class:`ponder.kernel.kinds.Exporter`.

    Example::

        @hookimpl
        def ponder_register_exporters(register):
            register("jsonl", JSONLExporter, settings=JSONLSettings)
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
    "executor": "ponder_register_executors",
}
#: the kinds a config section selects one of (``[adapter] name = …``)
KINDS: tuple[str, ...] = tuple(KIND_HOOKS)
#: kinds a run uses several of, named in a component's settings (``[predictor] tools = […]``)
#: (metrics are named by ``ponder eval --metric``, optimizers by ``--optimizer``, exporters by
#: ``[telemetry] exporter``)
COLLECTION_HOOKS: dict[str, str] = {
    "tool": "ponder_register_tools",
    "metric": "ponder_register_metrics",
    "optimizer": "ponder_register_optimizers",
    "exporter": "ponder_register_exporters",
}
ALL_KIND_HOOKS: dict[str, str] = {**KIND_HOOKS, **COLLECTION_HOOKS}
