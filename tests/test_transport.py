"""The openai backend's HTTP client (backends/transport.py) against real sockets on 127.0.0.1:
what the server did decides which error comes back, and our own bugs are not among them."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable

import pytest

from selfinstruct.backends.transport import (
    HTTPStatusError,
    JSONClient,
    MalformedReply,
    TransportConnectionError,
    TransportTimeout,
    proxy_for,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _response(status: str, body: bytes, headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def _call(handler: Handler, path: str = "chat/completions", timeout: float = 5.0) -> object:
    """Start a server running `handler` for each connection, post one request, return what
    came back (or the exception raised)."""

    async def main() -> object:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = JSONClient(f"http://127.0.0.1:{port}/v1/", "sk-test", timeout)
        try:
            return await client.post(path, {"model": "m", "prompt": "hi"})
        except Exception as exc:  # the test looks at which one
            return exc
        finally:
            await client.close()
            server.close()

    return asyncio.run(main())


def test_a_good_answer_and_what_was_sent() -> None:
    sent: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent.append(await _read_request(reader))
        body = json.dumps({"choices": [{"text": "ok"}]}).encode()
        writer.write(_response("200 OK", body, "x-ratelimit-remaining-requests: 7\r\n"))
        await writer.drain()

    data, headers = _call(handler)  # type: ignore[misc]
    assert data == {"choices": [{"text": "ok"}]}
    assert headers["X-RateLimit-Remaining-Requests"] == "7"  # read in any case
    head, body = sent[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1")  # one slash, under /v1
    assert b"authorization: bearer sk-test" in head.lower()
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"model": "m", "prompt": "hi"}


def test_an_error_status_keeps_its_body_and_headers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        body = json.dumps({"error": {"message": "slow down", "code": "rate"}}).encode()
        writer.write(_response("429 Too Many Requests", body, "retry-after: 2\r\n"))
        await writer.drain()

    error = _call(handler)
    assert isinstance(error, HTTPStatusError) and error.status_code == 429
    assert error.body == {"error": {"message": "slow down", "code": "rate"}}
    assert error.headers["retry-after"] == "2"

    async def text_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_response("502 Bad Gateway", b"<html>bad gateway</html>"))
        await writer.drain()

    error = _call(text_error)
    assert isinstance(error, HTTPStatusError) and error.body == "<html>bad gateway</html>"


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b""])
def test_a_200_that_is_not_json_is_malformed(body: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_response("200 OK", body))
        await writer.drain()

    assert isinstance(_call(handler), MalformedReply)


def test_connection_failures() -> None:
    async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)  # and closes without a word

    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"choices"')
        await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    for handler in (closes, cut_short, garbage):
        error = _call(handler)
        assert isinstance(error, TransportConnectionError), (handler.__name__, error)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def refused() -> object:
        client = JSONClient(f"http://127.0.0.1:{port}/v1", "k", 5.0)
        try:
            return await client.get("models")
        except Exception as exc:
            return exc
        finally:
            await client.close()

    error = asyncio.run(refused())
    assert isinstance(error, TransportConnectionError) and "Connect" in str(error)


def test_no_answer_in_time_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    assert isinstance(_call(silent, timeout=0.3), TransportTimeout)


def test_the_proxy_is_the_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert proxy_for("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_for("https://api.openai.com/v1") == "http://proxy.internal:3128"
    assert proxy_for("http://10.0.0.5:8000/v1") is None  # only https goes through it
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert proxy_for("https://api.openai.com/v1") is None
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")  # no scheme, as often written
    assert proxy_for("https://api.openai.com/v1") == "http://proxy.internal:3128"


def test_a_bad_url_or_key_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selfinstruct.backends.base import BackendError
    from selfinstruct.backends.openai_compat import connect
    from selfinstruct.config import OpenAIOptions

    for url in ("localhost:8000/v1", "http://[::1/v1", "ftp://host/v1"):
        with pytest.raises(BackendError, match="not an http"):
            connect(OpenAIOptions(base_url=[url]))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc\n")  # read from a file: the newline goes
    assert connect(OpenAIOptions(base_url=["http://h/v1"]))[0] == "sk-abc"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-a\rbc")
    with pytest.raises(BackendError, match="control character") as err:
        connect(OpenAIOptions(base_url=["http://h/v1"]))
    assert "sk-a" not in str(err.value)
