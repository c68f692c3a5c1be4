"""A tiny real HTTP recommender for router tests: answers, slows down, errors or dies on demand."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.recommender.synthetic import movie_id


def items_for(name: str, user_id: int, n: int = 20) -> list[str]:
    """A deterministic list per (arm, user): arms overlap in part, like real models."""
    offset = (user_id * 7 + (0 if name == "control" else 5)) % 50
    return [movie_id(offset + i) for i in range(n)]


class StubRecommender:
    """``GET /recommend/<user>`` on loopback; ``mode``: ok, slow, error, garbage, too_many, dead,
    chunked, huge, drop_reused (a kept-alive connection closed by the server as it is reused)."""

    def __init__(self, name: str, *, version: str | None = None) -> None:
        self.name = name
        self.version = version or f"{name}-v1"
        self.mode = "ok"
        self.delay_s = 0.0
        self.calls = 0
        self.connections = 0
        self.users: list[int] = []
        self.request_ids: list[str | None] = []
        self.paths: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one write: no Nagle/delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                stub.connections += 1
                self.served = 0

            def do_GET(self) -> None:
                stub.calls += 1
                self.served += 1
                user = int(self.path.rsplit("/", 1)[-1])
                stub.users.append(user)
                stub.paths.append(self.path)
                stub.request_ids.append(self.headers.get("X-Request-Id"))
                mode = stub.mode
                if mode == "dead" or (mode == "drop_reused" and self.served > 1):
                    # a crashed process, or a keep-alive timeout: the connection drops unanswered
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if mode == "chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    body = ",".join(items_for(stub.name, user)).encode()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                    return
                if mode == "huge":
                    self._send(200, "a" * 20_000)
                    return
                if mode == "slow":
                    time.sleep(stub.delay_s)
                if mode == "error":
                    self._send(503, "no model loaded yet")
                    return
                if mode == "garbage":
                    self._send(200, "a b c")
                    return
                n = 25 if mode == "too_many" else 20
                self._send(200, ",".join(items_for(stub.name, user, n)))

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Model-Name", stub.name)
                self.send_header("X-Model-Version", stub.version)
                self.send_header("X-Model-Family", "stub")
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # like a real server's backlog: bursts of connects wait

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening (connections are then refused)."""
        self.server.shutdown()
        self.server.server_close()
