"""Stands in for `python -m controller` in the harness tests: echoes its flags, serves /healthz."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    args = sys.argv[1:]
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        key, _, value = args[i].partition("=")
        if not value and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        flags[key] = value
        i += 1
    flags["KUBECONFIG"] = os.environ.get("KUBECONFIG", "")
    print(json.dumps(flags), flush=True)
    host, port = flags["--health-probe-bind-address"].rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), _Health)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()
    print("stopping", flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
