"""JSON over HTTP for the OpenAI-compatible backend: one kept-alive aiohttp session a server.

Why not the openai package's client here: against a loopback server that answers at once, a
chat completion through `AsyncOpenAI(...).chat.completions.with_raw_response.create` cost
1.76-2.05 ms of client CPU (its request options and response models in pydantic, on httpx),
the same request as a plain httpx post 0.90 ms, and through aiohttp 0.14 ms (bench/
BENCHMARKS.md, "Client CPU per request"). At hundreds of requests a second that difference is
the client's whole budget. The wire format is the same: the body `request_body` builds, the
`Authorization: Bearer` header, the JSON the server answers.

What comes back: the decoded JSON and the headers; or one of three exceptions, named by what
the server did: `HTTPStatusError` (it answered with an error status), `TransportTimeout` (no
answer in time), `TransportConnectionError` (no connection, or it broke). A 200 whose body is
not JSON is `MalformedReply`. Anything else is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp

from selfinstruct import __version__


class MalformedReply(Exception):
    """A reply that came back (HTTP 200) but is not a completion: not JSON, no choices, no
    text. The server's fault, retried like one; any other exception is a bug of ours and keeps
    its traceback."""


class HTTPStatusError(Exception):
    """The server answered with an error status. `body` is its JSON (a dict) when it sent
    JSON, else its text."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        self.status_code = status
        self.body = body
        self.headers = headers
        self.message = f"Error code: {status} - {body}"
        super().__init__(self.message)


class TransportTimeout(Exception):
    """No answer within the request's timeout."""


class TransportConnectionError(Exception):
    """No connection to the server, or it broke before the answer was read."""


# Headers the openai package sends from its environment variables, sent the same way here.
_ENV_HEADERS = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}


class JSONClient:
    """Requests to one base URL (`https://host/v1`). Built inside the event loop that uses it."""

    # aiohttp's defaults (8,190 bytes a header line, 128 headers) are below what proxies and
    # gateways sometimes send; the openai package's client took them.
    MAX_HEADER_BYTES, MAX_HEADERS = 65_536, 1_024

    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        # Checked before the session exists, so a bad URL leaves nothing open behind it.
        self._proxy = proxy_for(self.base_url)
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"selfinstruct/{__version__}",
        }
        headers.update({h: os.environ[e] for e, h in _ENV_HEADERS.items() if os.environ.get(e)})
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            # The backend's adaptive limit decides how many are in flight; the pool follows it.
            connector=aiohttp.TCPConnector(
                limit=0,
                ttl_dns_cache=300,
                # Loading the certificates takes 30-40 ms: only for a server that needs them.
                ssl=_ssl_context() if self.base_url.startswith("https:") else True,
            ),
            # Not trust_env: it looks up the proxy and reads ~/.netrc at every request (12% of
            # the client's CPU at 128 in flight). The proxy is looked up once instead.
            trust_env=False,
            raise_for_status=False,
            max_line_size=self.MAX_HEADER_BYTES,
            max_field_size=self.MAX_HEADER_BYTES,
            max_headers=self.MAX_HEADERS,
        )

    async def post(self, path: str, body: Mapping[str, Any]) -> tuple[Any, Mapping[str, str]]:
        return await self._call("POST", path, json.dumps(body).encode(), None)

    async def get(self, path: str, timeout: float | None = None) -> tuple[Any, Mapping[str, str]]:
        return await self._call("GET", path, None, timeout)

    async def _call(
        self, method: str, path: str, data: bytes | None, timeout: float | None
    ) -> tuple[Any, Mapping[str, str]]:
        url = f"{self.base_url}/{path.lstrip('/')}"
        extra: dict[str, Any] = {"proxy": self._proxy} if self._proxy else {}
        if timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(total=timeout)
        if data is not None:
            extra["headers"] = {"Content-Type": "application/json"}
        try:
            async with self._session.request(method, url, data=data, **extra) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except (asyncio.TimeoutError, TimeoutError) as exc:  # one class from Python 3.11 on
            # aiohttp's own timeouts (ServerTimeoutError, ConnectionTimeoutError) are these too.
            raise TransportTimeout(str(exc) or "timed out") from exc
        except aiohttp.ClientError as exc:
            # Refused, reset, cut short, not HTTP at all (a parser error is a
            # ClientResponseError; statuses are not raised here), or an unusable URL.
            raise TransportConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise HTTPStatusError(status, _decoded(raw), headers)
        try:
            return json.loads(raw), headers
        except ValueError as exc:  # UnicodeDecodeError included
            raise MalformedReply(f"not JSON: {exc}") from None

    async def close(self) -> None:
        await self._session.close()


def http_url(url: str) -> urllib.parse.SplitResult:
    """`url` split, or ValueError when it is not an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return parts


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY,
    as the openai package's client reads them), or None. ValueError for a URL that is not one."""
    parts = http_url(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"  # "host:3128", as httpx read it
    return proxy or None


def _ssl_context() -> ssl.SSLContext:
    """The system's certificate store: on macOS and Windows through truststore (company
    certificates in the Keychain, python.org builds without OpenSSL's store), as the openai
    package's client did; elsewhere OpenSSL's default paths."""
    if sys.platform in ("darwin", "win32"):
        try:
            import truststore
        except ImportError:  # pragma: no cover - a dependency on these platforms
            pass
        else:
            return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return ssl.create_default_context()


def _decoded(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
