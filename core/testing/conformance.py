"""Reusable conformance suites, one per component kind (the Haystack way).

A plugin author subclasses the suite for their kind in a pytest module and sets the class
attributes; pytest collects the inherited tests::

    from ponder.testing.conformance import AdapterConformance

    class TestGatewayAdapter(AdapterConformance):
        name = "gateway"                      # the registered name
        settings = {"model": "acme/large"}    # config values for the plugin's settings class
        plugins = (my_plugin_module,)         # omit to use the installed entry points

ponder's own first-party plugins are checked with these same suites.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from ponder.kernel.kinds import KIND_PROTOCOLS, ModelInfo
from ponder.kernel.loader import PluginSet, load_plugins

HEAVY_MODULES = ("dspy", "litellm", "llama_cpp", "torch", "sentence_transformers")


class ComponentConformance:
    """Checks every kind shares: registration, settings, factory, protocol, light import."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    settings: ClassVar[dict[str, Any]] = {}
    #: plugin objects/modules to load; empty = the installed entry points (strict)
    plugins: ClassVar[Sequence[Any]] = ()

    def load(self) -> PluginSet:
        if self.plugins:
            return load_plugins(entry_points=False, objects=self.plugins, strict=True)
        return load_plugins(strict=True, allow=None)

    def registration(self):
        return self.load().get(self.kind, self.name)

    def build_settings(self) -> Any:
        from ponder.kernel.config import structure_settings

        entry = self.registration()
        if entry.settings is None:
            assert not self.settings, f"{self.kind} {self.name!r} takes no settings"
            return None
        return structure_settings(entry.settings, self.settings, section=self.kind)

    def make(self) -> Any:
        entry = self.registration()
        settings = self.build_settings()
        return entry.factory(settings) if entry.settings is not None else entry.factory()

    # --- the tests ------------------------------------------------------------------------------
    def test_registered_under_its_name(self) -> None:
        entry = self.registration()
        assert entry.name == self.name and entry.kind == self.kind

    def test_settings_class_is_attrs_with_defaults_or_given(self) -> None:
        entry = self.registration()
        if entry.settings is not None:
            assert attrs.has(entry.settings)
            assert self.build_settings() is not None

    def test_factory_satisfies_protocol(self) -> None:
        component = self.make()
        protocol = KIND_PROTOCOLS[self.kind]
        assert isinstance(component, protocol), (
            f"{self.kind} {self.name!r} built {type(component).__name__}, which lacks the "
            f"{protocol.__name__} protocol's methods"
        )

    def test_plugin_import_is_light(self) -> None:
        """Importing the plugin module must not import dspy, litellm, torch or llama_cpp."""
        module = getattr(self.registration().factory, "__module__", None)
        if not module or module == "__main__" or module.startswith("test"):
            return  # an in-test fake: nothing to import in a fresh process
        code = (f"import sys, {module}; "
                f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "", f"importing {module} imported {out}"


class AdapterConformance(ComponentConformance):
    """An adapter describes its model and builds a DSPy LM."""

    kind: ClassVar[str] = "adapter"

    def test_model_info(self) -> None:
        info = self.make().model_info()
        assert isinstance(info, ModelInfo)
        assert info.context_window > 0 and info.max_output_tokens > 0
        assert info.input_cost_per_token >= 0 and info.output_cost_per_token >= 0

    def test_build_lm_is_a_dspy_lm(self) -> None:
        import dspy

        assert isinstance(self.make().build_lm(), dspy.BaseLM)


class StrategyConformance(ComponentConformance):
    kind: ClassVar[str] = "strategy"


class PredictorConformance(ComponentConformance):
    kind: ClassVar[str] = "predictor"


class RetrieverConformance(ComponentConformance):
    kind: ClassVar[str] = "retriever"


class StorageConformance(ComponentConformance):
    """A storage records runs and their calls, serves them back, and keeps artifacts.

    Each behavioural test builds a fresh store with :meth:`make_storage` and closes it after.
    Override it when the settings must differ per test, e.g. a file under ``tmp_path``::

        class TestMyStore(StorageConformance):
            name = "mystore"
            plugins = (my_store_module,)

            def make_storage(self, tmp_path):
                return MyStore(MySettings(path=str(tmp_path / "runs.db")))

    A persistent backend also overrides :meth:`reopen_storage` so the suite checks that what
    was committed survives closing the store.
    """

    kind: ClassVar[str] = "storage"

    def make_storage(self, tmp_path: Path) -> Any:
        """A fresh, empty store for one test (default: the plugin built with ``settings``)."""
        return self.make()

    def reopen_storage(self, storage: Any, tmp_path: Path) -> Any:
        """The same records through a new handle (default: ``storage`` itself, for a backend
        that keeps nothing once closed)."""
        return storage

    @contextlib.contextmanager
    def fresh_storage(self, tmp_path: Path) -> Iterator[Any]:
        storage = self.make_storage(tmp_path)
        try:
            yield storage
        finally:
            storage.close()

    # --- sample records -----------------------------------------------------------------------
    @staticmethod
    def sample_run(run_id: str, **fields: Any) -> dict[str, Any]:
        run = {
            "id": run_id,
            "started_at": 1_700_000_000.25,
            "question": f"What does {run_id} do?",
            "source_digest": "sha256:" + "ab" * 32,
            "sources": ["src/", "README.md"],
            "config": {"strategy": {"name": "map_reduce", "fan_in": 4},
                       "limits": {"max_cost": 0.5}},
            "model": "openai/gpt-4o-mini",
            "adapter": "litellm",
            "strategy": "map_reduce",
        }
        run.update(fields)
        return run

    @staticmethod
    def sample_call(index: int, **fields: Any) -> dict[str, Any]:
        call = {
            "role": f"map-{index}",
            "adapter": "litellm",
            "model": "openai/gpt-4o-mini",
            "prompt_chars": 1000 + index,
            "reply_chars": 100 + index,
            "input_tokens": 250 + index,
            "output_tokens": 25 + index,
            "latency_s": 0.5 + index,
            "cost_usd": 0.000125 * (index + 1),
            "retries": index % 2,
            "cached": index % 2 == 1,
            "error": None if index % 3 else f"timeout on call {index}",
        }
        call.update(fields)
        return call

    @staticmethod
    def sample_result(**fields: Any) -> dict[str, Any]:
        result = {
            "status": "partial",
            "answer": "It parses the config. [src/config.py:12]",
            "usage": {"calls": 3, "input_tokens": 753, "output_tokens": 78, "cost_usd": 0.00075},
            "cost_usd": 0.00075,
            "elapsed_s": 4.5,
            "failures": [{"index": 2, "error": "timeout on call 2", "kind": "timeout"}],
            "stopped_by": "max_cost",
            "chunks": [{"index": 0, "path": "src/config.py", "tokens": 800}],
            "spans": [
                {"id": "s1", "parent_id": None, "name": "run", "type": "run", "start": 1.0,
                 "end": 5.5, "duration_s": 4.5, "status": "ok", "error": None,
                 "attributes": {"strategy": "map_reduce"}, "thread": "MainThread"},
                {"id": "s2", "parent_id": "s1", "name": "map", "type": "lm", "start": 1.5,
                 "end": 2.0, "duration_s": 0.5, "status": "error", "error": "timeout",
                 "attributes": {}, "thread": "worker-1"},
            ],
        }
        result.update(fields)
        return result

    # --- the tests ------------------------------------------------------------------------------
    def test_factory_satisfies_protocol(self) -> None:
        storage = self.make()  # as the base check, but the store is closed afterwards
        try:
            assert isinstance(storage, KIND_PROTOCOLS[self.kind]), (
                f"storage {self.name!r} built {type(storage).__name__}, which lacks the "
                f"Storage protocol's methods")
        finally:
            close = getattr(storage, "close", None)
            if callable(close):
                close()

    def test_location_is_text(self, tmp_path: Path) -> None:
        with self.fresh_storage(tmp_path) as storage:
            assert isinstance(storage.location, str) and storage.location

    def test_round_trip_preserves_fields(self, tmp_path: Path) -> None:
        run = self.sample_run("run0001abcdef")
        calls = [self.sample_call(i) for i in range(3)]
        result = self.sample_result()
        with self.fresh_storage(tmp_path) as storage:
            assert storage.begin_run(run) == "run0001abcdef"
            for call in calls:
                storage.record_call("run0001abcdef", call)
            storage.finish_run("run0001abcdef", result)
            got = storage.get_run("run0001abcdef")
        assert got is not None
        for key, value in run.items():
            assert got[key] == value, f"run field {key!r}: stored {value!r}, got {got[key]!r}"
        for key, value in result.items():
            if key != "spans":
                assert got[key] == value, f"result field {key!r}: stored {value!r}, " \
                                          f"got {got[key]!r}"
        assert len(got["calls"]) == len(calls)
        for index, (sent, back) in enumerate(zip(calls, got["calls"], strict=True)):
            for key, value in sent.items():
                assert back[key] == value, f"call {index} field {key!r}: stored {value!r}, " \
                                           f"got {back[key]!r}"
        assert [(s["id"], s["name"], s["parent_id"]) for s in got["spans"]] == [
            ("s1", "run", None), ("s2", "map", "s1")]
        assert got["spans"][0]["attributes"] == {"strategy": "map_reduce"}

    def test_list_runs_newest_first_with_limit(self, tmp_path: Path) -> None:
        ids = [f"list{index:08d}" for index in range(5)]
        with self.fresh_storage(tmp_path) as storage:
            assert storage.list_runs() == []
            for index, run_id in enumerate(ids):
                storage.begin_run(self.sample_run(run_id, started_at=1_700_000_000.0 + index))
            storage.finish_run(ids[1], self.sample_result(status="ok"))
            listed = storage.list_runs()
            assert [r["id"] for r in listed] == ids[::-1]
            assert [r["id"] for r in storage.list_runs(2)] == [ids[4], ids[3]]
            assert [r["id"] for r in storage.list_runs(limit=1)] == [ids[4]]
        by_id = {r["id"]: r for r in listed}
        assert by_id[ids[1]]["status"] == "ok"
        assert by_id[ids[0]]["status"] in ("running", "incomplete")
        assert by_id[ids[2]]["question"] == f"What does {ids[2]} do?"

    def test_get_run_by_unique_prefix(self, tmp_path: Path) -> None:
        import pytest

        from ponder.errors import PonderError

        with self.fresh_storage(tmp_path) as storage:
            for run_id in ("abc123def456", "abc999000111", "f00dfeed0001"):
                storage.begin_run(self.sample_run(run_id))
            assert storage.get_run("f00d")["id"] == "f00dfeed0001"
            assert storage.get_run("abc1")["id"] == "abc123def456"
            assert storage.get_run("abc999000111")["id"] == "abc999000111"
            with pytest.raises(PonderError) as caught:
                storage.get_run("abc")
        message = str(caught.value)
        assert "abc123def456" in message and "abc999000111" in message

    def test_unknown_run_is_none(self, tmp_path: Path) -> None:
        with self.fresh_storage(tmp_path) as storage:
            assert storage.get_run("0123456789ab") is None
            storage.begin_run(self.sample_run("known0000001"))
            assert storage.get_run("unknown") is None
            assert storage.get_run("known0000001x") is None

    def test_artifacts_put_get_overwrite(self, tmp_path: Path) -> None:
        blob = bytes(range(256)) * 4  # every byte value, NULs included
        with self.fresh_storage(tmp_path) as storage:
            assert storage.get_artifact("index", "k1") is None
            storage.put_artifact("index", "k1", blob)
            storage.put_artifact("other", "k1", b"other kind")
            assert storage.get_artifact("index", "k1") == blob
            storage.put_artifact("index", "k1", b"second")
            assert storage.get_artifact("index", "k1") == b"second"
            assert storage.get_artifact("other", "k1") == b"other kind"
            assert storage.get_artifact("index", "k2") is None
            assert storage.get_artifact("missing", "k1") is None

    def test_records_put_get_list_delete(self, tmp_path: Path) -> None:
        with self.fresh_storage(tmp_path) as storage:
            assert storage.get_record("eval", "a/1") is None
            storage.put_record("eval", "a/2", {"score": 0.5})
            storage.put_record("eval", "a/1", {"score": 1.0, "tags": ["x"]})
            storage.put_record("eval", "a_1", {"score": 0.0})  # `_` is no wildcard
            storage.put_record("session", "a/1", {"turns": []})
            storage.put_record("eval", "a/2", {"score": 0.75})  # overwrite
            assert storage.get_record("eval", "a/1") == {"score": 1.0, "tags": ["x"]}
            assert storage.list_records("eval", "a/") == [("a/1", {"score": 1.0, "tags": ["x"]}),
                                                          ("a/2", {"score": 0.75})]
            assert [k for k, _ in storage.list_records("eval")] == ["a/1", "a/2", "a_1"]
            assert storage.delete_record("eval", "a/1") is True
            assert storage.delete_record("eval", "a/1") is False
            assert storage.get_record("eval", "a/1") is None
            assert storage.get_record("session", "a/1") == {"turns": []}

    def test_records_hold_no_secrets(self, tmp_path: Path) -> None:
        secret = "sk-conformance-0123456789abcdef"
        with self.fresh_storage(tmp_path) as storage:
            storage.put_record("session", "s", {"config": {"api_key": secret}})
            assert secret not in str(storage.get_record("session", "s"))

    def test_unfinished_run_stays_visible(self, tmp_path: Path) -> None:
        storage = self.make_storage(tmp_path)
        try:
            storage.begin_run(self.sample_run("unfinished01"))
            storage.record_call("unfinished01", self.sample_call(0))
            storage = self.reopen_storage(storage, tmp_path)
            listed = storage.list_runs()
            got = storage.get_run("unfinished01")
        finally:
            storage.close()
        assert [r["id"] for r in listed] == ["unfinished01"]
        assert listed[0]["status"] in ("running", "incomplete")
        assert got is not None and got["status"] in ("running", "incomplete")
        assert got["answer"] is None
        assert [c["role"] for c in got["calls"]] == ["map-0"]

    def test_concurrent_record_call_loses_nothing(self, tmp_path: Path) -> None:
        threads_n, per_thread = 8, 25
        barrier = threading.Barrier(threads_n)
        errors: list[BaseException] = []
        with self.fresh_storage(tmp_path) as storage:
            storage.begin_run(self.sample_run("concurrent01"))

            def work(thread: int) -> None:
                try:
                    barrier.wait()
                    for index in range(per_thread):
                        storage.record_call("concurrent01", self.sample_call(
                            index, role=f"thread-{thread}", input_tokens=index))
                except BaseException as exc:  # reported below, in the test's thread
                    errors.append(exc)

            workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            got = storage.get_run("concurrent01")
        assert not errors, errors
        calls = got["calls"]
        assert len(calls) == threads_n * per_thread
        for thread in range(threads_n):
            # each thread's calls are all there, in the order that thread recorded them
            mine = [c["input_tokens"] for c in calls if c["role"] == f"thread-{thread}"]
            assert mine == list(range(per_thread))


class ToolConformance(ComponentConformance):
    """A tool binds to a run's context and gives a documented, typed function returning text."""

    kind: ClassVar[str] = "tool"

    def sample_context(self) -> Any:
        from ponder.context.sources import Context, Document

        return Context([Document("src/app.py", "PORT = 8080\ndef main():\n    return PORT\n")])

    def test_make_returns_a_documented_callable(self) -> None:
        import inspect

        fn = self.make().make(self.sample_context())
        assert callable(fn)
        assert (fn.__doc__ or "").strip(), "a tool's docstring is what the model reads"
        hints = inspect.signature(fn).parameters
        assert all(p.annotation is not inspect.Parameter.empty for p in hints.values()), (
            "every tool parameter needs a type hint (it becomes the tool's schema)")

    def test_binds_to_an_empty_context(self) -> None:
        from ponder.context.sources import Context

        assert callable(self.make().make(Context([])))
