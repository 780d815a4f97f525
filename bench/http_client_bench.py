"""Client CPU per request of the HTTP clients the openai backend could use, nothing else.

    python bench/http_client_bench.py [--requests 3000] [--in-flight 128]

A minimal asyncio server in its own process answers every POST at once with one chat
completion; the client sends the same chat request (a 2 kB prompt) N times, `--in-flight` at a
time, in one asyncio loop, and reports its CPU per request. Modes: the openai package
(`AsyncOpenAI ... with_raw_response.create`, as the backend did before), a plain httpx post
(the openai package's transport), aiohttp (what backends/transport.py uses), and our
`JSONClient` itself. Why transport.py exists: see bench/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "1. Write a poem.\n2. Name a colour."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }
).encode()
MESSAGES = [{"role": "user", "content": "Come up with a series of tasks:\n" + "Task 1: x\n" * 200}]


class _Answer(asyncio.Protocol):
    """HTTP/1.1 keep-alive: every complete request gets the same answer."""

    reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(BODY)).encode()
        + b"\r\n\r\n"
        + BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.reply)  # type: ignore[attr-defined]


async def _serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Answer, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _client(mode: str, port: int, requests: int, in_flight: int) -> float:
    url = f"http://127.0.0.1:{port}/v1"
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 100, "temperature": 0.7}
    if mode == "openai":
        import openai

        client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)

        async def one() -> None:
            raw = await client.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]
            _ = raw.headers, raw.parse().choices[0].message.content

    elif mode == "httpx":
        import httpx2 as httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=in_flight))

        async def one() -> None:
            answer = await client.post(f"{url}/chat/completions", json=body)
            _ = json.loads(answer.content)["choices"][0]["message"]["content"]

    elif mode == "aiohttp":
        import aiohttp

        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def one() -> None:
            async with client.post(f"{url}/chat/completions", data=json.dumps(body)) as answer:
                _ = json.loads(await answer.read())["choices"][0]["message"]["content"]

    else:
        sys.path.insert(0, str(REPO))
        from selfinstruct.backends.transport import JSONClient

        client = JSONClient(url, "x", 30.0)

        async def one() -> None:
            data, _ = await client.post("chat/completions", body)
            _ = data["choices"][0]["message"]["content"]

    gate = asyncio.Semaphore(in_flight)

    async def gated() -> None:
        async with gate:
            await one()

    await asyncio.gather(*(gated() for _ in range(min(requests, 500))))  # warm: connections
    started = _cpu()
    await asyncio.gather(*(gated() for _ in range(requests)))
    spent = _cpu() - started
    close = getattr(client, "close", None) or client.aclose  # type: ignore[attr-defined]
    await close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=128)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    if args.mode:
        spent = asyncio.run(_client(args.mode, args.port, args.requests, args.in_flight))
        print(f"{1000 * spent / args.requests:.3f}")
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        print(f"{args.requests} requests, {args.in_flight} in flight; client CPU per request:")
        for mode in ("openai", "httpx", "aiohttp", "JSONClient"):
            started = time.perf_counter()
            cmd = [sys.executable, __file__, "--mode", mode, "--port", str(port)]
            cmd += ["--requests", str(args.requests), "--in-flight", str(args.in_flight)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            print(f"  {mode:10} {float(out):.3f} ms ({time.perf_counter() - started:.1f} s)")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
