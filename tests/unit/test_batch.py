"""ponder.support.batch: JSONL files, polling and streaming downloads against a real local
server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ponder.support.batch import (
    BatchPoller,
    BatchRequest,
    DownloadError,
    create_jsonl,
    parse_jsonl,
    safe_url,
    stream_download,
)
from ponder.support.retry import RetryPolicy, is_retryable

# -- requests and JSONL ----------------------------------------------------------------------------


def test_to_line_shape() -> None:
    request = BatchRequest(
        custom_id="req-1",
        messages=[{"role": "user", "content": "hi"}],
        model="gpt-4o-mini",
        params={"temperature": 0, "max_tokens": 10},
    )
    assert request.to_line() == {
        "custom_id": "req-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0,
            "max_tokens": 10,
        },
    }
    assert "model" not in BatchRequest(custom_id="x", messages=[]).to_line()["body"]


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="params must not set model"):
        BatchRequest(custom_id="a", messages=[], params={"model": "m"})
    with pytest.raises(ValueError, match="custom_id"):
        BatchRequest(custom_id="", messages=[])


def test_jsonl_round_trip(tmp_path: Path) -> None:
    requests = [
        BatchRequest(custom_id=f"req-{i}", messages=[{"role": "user", "content": f"q{i} é"}])
        for i in range(3)
    ]
    path = create_jsonl(requests, tmp_path / "sub" / "batch.jsonl")
    assert path == tmp_path / "sub" / "batch.jsonl"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and len(text.splitlines()) == 3
    assert "é" in text  # not \u-escaped
    assert parse_jsonl(path) == [r.to_line() for r in requests]
    assert not [p for p in path.parent.iterdir() if p.name != "batch.jsonl"]  # no temp files


def test_create_jsonl_default_path_in_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path / "cache"))
    path = create_jsonl([{"custom_id": "a", "body": {}}])
    assert path.parent == tmp_path / "cache" / "batches"
    assert path.suffix == ".jsonl"
    assert parse_jsonl(path) == [{"custom_id": "a", "body": {}}]


def test_create_jsonl_rejects_duplicates_and_empty(tmp_path: Path) -> None:
    requests = [
        BatchRequest(custom_id="a", messages=[]),
        BatchRequest(custom_id="dup-7", messages=[]),
        BatchRequest(custom_id="dup-7", messages=[]),
    ]
    with pytest.raises(ValueError, match=r"duplicate custom_id 'dup-7' \(requests 1 and 2\)"):
        create_jsonl(requests, tmp_path / "b.jsonl")
    assert not (tmp_path / "b.jsonl").exists()
    with pytest.raises(ValueError, match="at least one"):
        create_jsonl([], tmp_path / "b.jsonl")


def test_parse_jsonl_skips_blank_and_names_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": 2}\n{"c": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}:5: invalid JSON"):
        parse_jsonl(path)
    path.write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    assert parse_jsonl(path) == [{"a": 1}, {"b": 2}]
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}:1: expected a JSON object"):
        parse_jsonl(path)


# -- polling ---------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def statuses(*names: str) -> Any:
    items = [{"status": n, "n": i} for i, n in enumerate(names)]

    async def get_status() -> dict[str, Any]:
        return items.pop(0)

    return get_status


def test_poll_until_complete() -> None:
    fake = FakeTime()
    seen: list[str] = []
    poller = BatchPoller(
        poll_interval=30,
        on_progress=lambda s: seen.append(s["status"]),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    final = asyncio.run(
        poller.poll_until_complete(statuses("validating", "in_progress", "completed"))
    )
    assert final == {"status": "completed", "n": 2}
    assert seen == ["validating", "in_progress", "completed"]
    assert fake.sleeps == [30, 30]


@pytest.mark.parametrize("terminal", ["failed", "expired", "cancelled", "COMPLETED"])
def test_every_terminal_status_stops(terminal: str) -> None:
    fake = FakeTime()
    poller = BatchPoller(poll_interval=1, sleep=fake.sleep, clock=fake.clock)
    assert asyncio.run(poller.poll_until_complete(statuses(terminal)))["status"] == terminal
    assert fake.sleeps == []


def test_poll_timeout() -> None:
    fake = FakeTime()
    poller = BatchPoller(poll_interval=30, timeout=70, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(TimeoutError, match="in_progress"):
        asyncio.run(poller.poll_until_complete(statuses(*["in_progress"] * 10)))
    # waits never overshoot the deadline: 30 + 30 + 10
    assert fake.sleeps == [30, 30, 10]


def test_poll_async_on_progress_and_bad_status() -> None:
    fake = FakeTime()
    seen: list[int] = []

    async def on_progress(status: dict[str, Any]) -> None:
        seen.append(status["n"])

    poller = BatchPoller(poll_interval=1, on_progress=on_progress, sleep=fake.sleep)
    asyncio.run(poller.poll_until_complete(statuses("running", "completed")))
    assert seen == [0, 1]

    async def no_status() -> dict[str, Any]:
        return {"state": "done"}

    with pytest.raises(ValueError, match="'status' key"):
        asyncio.run(poller.poll_until_complete(no_status))


def test_poll_retries_transient_status_errors() -> None:
    fake = FakeTime()
    calls = {"n": 0}

    async def get_status() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("blip")
        return {"status": "completed"}

    poller = BatchPoller(
        sleep=fake.sleep, clock=fake.clock, retry=RetryPolicy(base_delay=1.0, jitter=0.0)
    )
    assert asyncio.run(poller.poll_until_complete(get_status)) == {"status": "completed"}
    assert fake.sleeps == [1.0]


# -- downloads against a real server -----------------------------------------------------------

PAYLOAD = b"".join(b'{"custom_id": "req-%d"}\n' % i for i in range(5000))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif path == "/truncated":
            # promise more than we send, then hang up: the client sees an incomplete body
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif path == "/busy":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            body = b"not here"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # a short poll interval keeps shutdown() quick
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_stream_download_ok(server: str, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "results.jsonl"
    result = asyncio.run(stream_download(f"{server}/ok", out, chunk_size=1024))
    assert result == out
    assert out.read_bytes() == PAYLOAD
    assert leftovers(out.parent) == ["results.jsonl"]
    assert len(parse_jsonl(out)) == 5000


def test_stream_download_with_given_client(server: str, tmp_path: Path) -> None:
    async def go() -> Path:
        async with httpx.AsyncClient() as client:
            path = await stream_download(f"{server}/ok", tmp_path / "r.jsonl", client=client)
            assert not client.is_closed  # a caller's client is left open
            return path

    assert asyncio.run(go()).read_bytes() == PAYLOAD


def test_stream_download_404_hides_query_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("previous\n")
    with pytest.raises(DownloadError) as info:
        asyncio.run(stream_download(f"{server}/missing?key=AIzaSECRETSECRET&x=1", out))
    message = str(info.value)
    assert message == f"download of {server}/missing failed: HTTP 404 Not Found"
    assert "SECRET" not in message
    assert info.value.status_code == 404
    assert is_retryable(info.value) is False
    assert out.read_text() == "previous\n"  # untouched
    assert leftovers(tmp_path) == ["results.jsonl"]


def test_stream_download_5xx_is_retryable(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        asyncio.run(stream_download(f"{server}/busy", tmp_path / "r.jsonl"))
    assert is_retryable(info.value) is True
    assert leftovers(tmp_path) == []


def test_stream_download_truncated_body_leaves_no_partial_file(server: str, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    with pytest.raises(httpx.TransportError):
        asyncio.run(stream_download(f"{server}/truncated", out, chunk_size=512))
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_safe_url() -> None:
    assert safe_url("https://user:pw@h.example:8443/v1/files/f?key=abc#frag") == (
        "https://h.example:8443/v1/files/f"
    )
    assert json.dumps(safe_url("http://h/p")) == '"http://h/p"'
