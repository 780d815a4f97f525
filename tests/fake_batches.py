"""A stand-in for OpenAI's Batch API on 127.0.0.1: /v1/files and /v1/batches.

Uploads are kept; a batch stays `in_progress` until `release()` (or at once with `instant`),
then completes with one canned answer per request line (the scripted backend's replies), written
to an output file the client downloads. Every call is recorded, so a test can check that a
resumed run polls the batch it created instead of uploading its requests again.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfinstruct.backends.scripted import canned_reply


def _text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(m["content"] for m in body["messages"])
    return body["prompt"]


class FakeBatchAPI:
    def __init__(self, instant: bool = True) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        if instant:
            self.released.set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, data: Any, raw: bytes | None = None) -> None:
                payload = raw if raw is not None else json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                path = self.path.split("?")[0]
                with fake.lock:
                    fake.calls.append(f"POST {path}")
                if path.endswith("/files"):
                    content = _multipart_file(body, self.headers.get("content-type", ""))
                    file_id = f"file-{len(fake.files)}"
                    fake.files[file_id] = content
                    self._reply(200, _file(file_id, len(content)))
                elif path.endswith("/batches"):
                    request = json.loads(body)
                    batch_id = f"batch_{len(fake.batches)}"
                    fake.batches[batch_id] = {
                        "id": batch_id,
                        "object": "batch",
                        "endpoint": request["endpoint"],
                        "input_file_id": request["input_file_id"],
                        "completion_window": "24h",
                        "status": "in_progress",
                        "created_at": 0,
                        "output_file_id": None,
                        "error_file_id": None,
                    }
                    self._reply(200, fake.batches[batch_id])
                else:
                    self._reply(404, {"error": {"message": f"not faked: {path}"}})

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with fake.lock:
                    fake.calls.append(f"GET {path}")
                found = re.search(r"/batches/([^/]+)$", path)
                if found and found.group(1) in fake.batches:
                    self._reply(200, fake.poll(found.group(1)))
                    return
                found = re.search(r"/files/([^/]+)/content$", path)
                if found and found.group(1) in fake.files:
                    self._reply(200, None, raw=fake.files[found.group(1)])
                    return
                self._reply(404, {"error": {"message": f"not faked: {path}"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def release(self) -> None:
        self.released.set()

    def poll(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch = self.batches[batch_id]
            if batch["status"] == "in_progress" and self.released.is_set():
                lines = self.files[batch["input_file_id"]].decode().splitlines()
                answers = [self._answer(json.loads(line)) for line in lines if line.strip()]
                out_id = f"file-{len(self.files)}"
                self.files[out_id] = ("\n".join(answers) + "\n").encode()
                batch.update(status="completed", output_file_id=out_id)
            return dict(batch)

    @staticmethod
    def _answer(line: dict[str, Any]) -> str:
        body = line["body"]
        text = canned_reply(_text(body))
        usage = {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 0}
        if "messages" in body:
            choice = {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
            }
        else:
            choice = {"index": 0, "finish_reason": "stop", "text": text}
        response = {
            "status_code": 200,
            "request_id": "r",
            "body": {"choices": [choice], "usage": usage},
        }
        return json.dumps(
            {"id": "x", "custom_id": line["custom_id"], "response": response, "error": None}
        )

    def __enter__(self) -> FakeBatchAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _file(file_id: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": 0,
        "filename": "requests.jsonl",
        "purpose": "batch",
    }


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The content of the part named "file" of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content.rsplit(b"\r\n", 1)[0]
    raise ValueError("no file part in the upload")
