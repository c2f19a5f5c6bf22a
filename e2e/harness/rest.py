"""A small synchronous Kubernetes REST client for the harness and its tests.

The controller has its own async client; tests use this one so that a bug there cannot hide a bug here.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any], method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        self.message = str(body.get("message", ""))
        super().__init__(f"{method} {path} -> {status} {self.reason}: {self.message}")


@dataclass(frozen=True)
class Api:
    """HTTP calls against one API server with one identity."""

    server: str
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 30.0

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Api:
        """Reads the current context: token or client certificate; the server's CA or insecure-skip-tls."""
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context") or config["contexts"][0]["name"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        if cluster.get("insecure-skip-tls-verify"):
            ctx = ssl._create_unverified_context()
        elif "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            ctx = ssl.create_default_context(cadata=ca)
        else:
            ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        if "client-certificate-data" in user:
            # ssl only loads client certificates from files.
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
                cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key.write_bytes(base64.b64decode(user["client-key-data"]))
                ctx.load_cert_chain(cert, key)
        elif "client-certificate" in user:
            ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        return cls(server=cluster["server"].rstrip("/"), token=user.get("token"), ssl_context=ctx)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        """Returns (status, decoded body) for any status; raises only on transport errors."""
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        ctx = self.ssl_context if self.ssl_context is not None else ssl._create_unverified_context()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Like request() but raises ApiError on any status >= 400."""
        status, decoded = self.request(method, path, body, **kwargs)
        if status >= 400:
            raise ApiError(status, decoded, method, path)
        return decoded

    def get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        return self.call("POST", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.call("DELETE", path, **kwargs)


def _decode(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return decoded if isinstance(decoded, dict) else {"items": decoded}
