"""A real HTTP server on loopback for the tests of outbound calls (no Django here: the library's tests use it too)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMPLETION = b'{"choices": [{"message": {"content": "4"}}]}'


class LoopbackServer:
    """A loopback HTTP server answering each POST with (status, body, headers), recording the path, Host
    header and body of each request that reached it."""

    def __init__(self, status: int = 200, body: bytes = COMPLETION, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}
        self.received: list[dict] = []
        self.bodies: list[bytes] = []  # each request's body, in the order of received
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append({"path": self.path, "host": self.headers.get("Host")})
                outer.bodies.append(body)
                self.send_response(outer.status)
                for name, value in {"Content-Type": "application/json", **outer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                try:
                    self.wfile.write(outer.body)
                except OSError:
                    pass  # the client read what it wanted and left

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
