"""Jaeger v2 all-in-one (in-memory storage) bound to loopback, and a reader for its query API."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.binaries import jaeger_binary
from e2e.harness.processes import ManagedProcess, StartError, free_port, pids_mentioning, tail

START_ATTEMPTS = 3
READY_TIMEOUT = 60.0


def _config(otlp_http: int, otlp_grpc: int, query_http: int, query_grpc: int, health: int) -> dict[str, Any]:
    # Every listener is pinned to 127.0.0.1 and a free port: the defaults (:16686, :8888, ...) listen on all
    # interfaces and would collide between parallel runs.
    loopback = "127.0.0.1"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{loopback}:{health}"}},
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                # Its self-tracing would otherwise export to the fixed port 127.0.0.1:4317.
                "enable_tracing": False,
                "http": {"endpoint": f"{loopback}:{query_http}"},
                "grpc": {"endpoint": f"{loopback}:{query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{loopback}:{otlp_grpc}"},
                    "http": {"endpoint": f"{loopback}:{otlp_http}"},
                }
            }
        },
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


class JaegerQuery:
    """Reads a Jaeger's query API; spans go to `otlp_http_endpoint` (for OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self, *, query_url: str, otlp_http_endpoint: str) -> None:
        self.query_url = query_url.rstrip("/")
        self.otlp_http_endpoint = otlp_http_endpoint.rstrip("/")

    def _get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        url = self.query_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=5) as resp:
            decoded: dict[str, Any] = json.loads(resp.read())
            return decoded

    def services(self) -> list[str]:
        return list(self._get("/api/services").get("data") or [])

    def traces(self, service: str, *, limit: int = 1000, lookback: str = "1h") -> list[dict[str, Any]]:
        """Traces of `service` in Jaeger's query-API JSON (each with `traceID`, `spans`, `processes`)."""
        try:
            data = self._get("/api/traces", {"service": service, "limit": str(limit), "lookback": lookback})
        except urllib.error.HTTPError as err:
            if err.code == 404:  # service not seen yet
                return []
            raise
        return list(data.get("data") or [])


class Jaeger(JaegerQuery):
    """A Jaeger process owned by this object. Use `start()`; always `stop()`."""

    def __init__(self, workdir: Path, proc: ManagedProcess, otlp_http: int, query_http: int) -> None:
        super().__init__(
            query_url=f"http://127.0.0.1:{query_http}", otlp_http_endpoint=f"http://127.0.0.1:{otlp_http}"
        )
        self.workdir = workdir
        self._proc = proc

    @classmethod
    def start(cls, *, workdir: Path | None = None, die_with_parent: bool = True) -> Jaeger:
        binary = jaeger_binary()
        workdir = workdir or Path(tempfile.mkdtemp(prefix="stablelb-jaeger-"))
        workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            ports = [free_port() for _ in range(5)]
            config = workdir / "jaeger.yaml"
            config.write_text(yaml.safe_dump(_config(*ports)))
            log_path = workdir / "jaeger.log"
            log_path.unlink(missing_ok=True)
            proc = ManagedProcess(
                [str(binary), "--config", f"file:{config}"], log_path, die_with_parent=die_with_parent
            )
            jaeger = cls(workdir, proc, otlp_http=ports[0], query_http=ports[2])
            try:
                jaeger._wait_ready()
                return jaeger
            except StartError:
                collided = "address already in use" in tail(log_path, 200)
                jaeger.stop(remove=attempt == START_ATTEMPTS or not collided)
                if attempt == START_ATTEMPTS or not collided:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise StartError(
                    f"jaeger exited during start; last lines of {self._proc.log_path}:\n"
                    f"{self._proc.log_tail()}"
                )
            try:
                self._get("/api/services")
                return
            except (OSError, ValueError):
                time.sleep(0.1)
        raise StartError(f"jaeger not ready after {READY_TIMEOUT:.0f}s:\n{self._proc.log_tail()}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self, *, remove: bool = True) -> None:
        if self._proc.alive():
            self._proc.stop(grace=5.0)
        strays = pids_mentioning(str(self.workdir))
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if strays:
            raise AssertionError(f"processes still running after Jaeger.stop(): {strays}")
