"""Controller CPU per assignment without an API server, by how many Services are already cached and held.

Builds what a leading `python -m controller` holds with N assigned LoadBalancer Services (bench/
controller_memory.py: the informer's watch-list path, the slim cache, adoption by the real ServiceReconciler
and Allocator), then assigns M new Services the way the process does: the watch event of the new Service
through the informer (parse, filter, slim, store), one reconcile (decision, status PATCH, Event), the echo
of our own status write as a MODIFIED event and its reconcile (no write). The API client is a stub that
answers at once, and the EventRecorder's senders run, so what is timed is the controller's own work per
assignment, with tracing set up as the process does it (no exporter). Not timed: HTTP (see bench/client.py)
and the pool-status refresh. Any growth with N shows here without the API server's noise.

Usage: .venv/bin/python bench/reconcile_cpu.py [--cached 1000 10000 50000] [--assign 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.controller_memory import build, service
from controller.telemetry import setup_tracing


class LastPatch:
    """The stub API client: answers at once, keeps the last status PATCH body (for the echo)."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {}

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "PATCH" and path.endswith("/status"):
            self.body = kwargs["body"]
        return {}


def echo(obj: dict[str, Any], patch: dict[str, Any], rv: int) -> dict[str, Any]:
    """The Service as the watch sends it back after our status write (a merge patch of status)."""
    meta = {**obj["metadata"], "resourceVersion": str(rv)}
    return {**obj, "metadata": meta, "status": {**(obj.get("status") or {}), **patch["status"]}}


async def assign(n: int, m: int, namespaces: int) -> float:
    """CPU seconds (this process) to assign M new Services with N already held."""
    client = LastPatch()
    built = build(n, namespaces, spare=m, client=client)
    recorder_task = asyncio.create_task(built.recorder.run())
    fresh = []
    for i in range(n, n + m):
        obj = service(i, f"bench-{i % namespaces:03d}")
        obj["status"] = {}
        fresh.append(obj)
    lines = [orjson.dumps({"type": "ADDED", "object": obj}) for obj in fresh]
    gc.collect()
    cpu = 0.0  # only the controller's work: building the echo events is the API server's part
    rv = 10 * (n + m)
    for obj, line in zip(fresh, lines, strict=True):
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        key = f"{namespace}/{name}"
        cpu0 = time.process_time()
        built.informer._handle_event(orjson.loads(line))
        outcome = await built.reconciler.reconcile(key)
        cpu += time.process_time() - cpu0
        assert outcome.wrote, outcome
        rv += 1
        modified = orjson.dumps({"type": "MODIFIED", "object": echo(obj, client.body, rv)})
        cpu0 = time.process_time()
        built.informer._handle_event(orjson.loads(modified))
        again = await built.reconciler.reconcile(key)
        await asyncio.sleep(0)  # the Event senders get their turn, as in the process
        cpu += time.process_time() - cpu0
        assert not again.wrote, again
    cpu0 = time.process_time()
    await built.recorder.close()
    await recorder_task
    return cpu + time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cached", type=int, nargs="+", default=[1000, 10000, 50000],
                        help="N: assigned Services already held (default 1000 10000 50000)")
    parser.add_argument("--assign", type=int, default=2000, help="M new Services assigned per run")
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="runs per N; the best is reported")
    args = parser.parse_args()
    setup_tracing(set_global=False)
    print(f"{args.assign} assignments per run, best of {args.repeat}; no HTTP, no pool-status refresh")
    print("| Services held (N) | CPU ms per assignment (best) | all runs |")
    print("|---:|---:|---|")
    for n in args.cached:
        runs = [asyncio.run(assign(n, args.assign, args.namespaces)) / args.assign * 1000
                for _ in range(args.repeat)]
        print(f"| {n:,} | {min(runs):.3f} | {', '.join(f'{r:.3f}' for r in runs)} |", flush=True)


if __name__ == "__main__":
    main()
