"""A stand-in for the Hugging Face hub's HTTP API on 127.0.0.1, for export --push-to-hub tests.

It answers the calls `huggingface_hub` makes to create a dataset repo and commit small files
(repo creation, README metadata validation, preupload, commit) and records every request, so a
test can check what was sent: the repo, its visibility, the files, the token. Anything else is
answered 404 and recorded, so a client change shows up as a failing test, not a silent pass.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.repos: dict[str, dict[str, Any]] = {}  # repo id -> {"private": bool, "files": {}}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                hub.requests.append({"method": "GET", "path": self.path})
                self._reply(404, {"error": f"not faked: GET {self.path}"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                record = {
                    "method": "POST",
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                }
                hub.requests.append(record)
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    payload = json.loads(body)
                    repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
                    if "/" in payload["name"]:
                        repo = payload["name"]
                    private = payload.get("private", payload.get("visibility") == "private")
                    hub.repos.setdefault(repo, {"private": private, "files": {}})
                    record["payload"] = payload
                    self._reply(200, {"url": f"{hub.url}/datasets/{repo}", "name": repo})
                elif parts[:2] == ["api", "validate-yaml"]:
                    self._reply(200, {"errors": [], "warnings": []})
                elif parts[:2] == ["api", "datasets"] and parts[4] == "preupload":
                    files = json.loads(body).get("files", [])
                    self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ],
                            "commitOid": "0" * 40,
                        },
                    )
                elif parts[:2] == ["api", "datasets"] and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            content = base64.b64decode(value["content"])
                            hub.repos.setdefault(repo, {"private": None, "files": {}})
                            hub.repos[repo]["files"][value["path"]] = content
                    self._reply(
                        200,
                        {"commitUrl": f"{hub.url}/datasets/{repo}/commit/1", "commitOid": "1" * 40},
                    )
                else:
                    self._reply(404, {"error": f"not faked: POST {self.path}"})

        return Handler
