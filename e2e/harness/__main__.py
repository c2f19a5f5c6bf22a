"""`python -m e2e.harness up|down|status`: a control plane that outlives the command, for people.

State lives in .stablelb/cluster/ at the repository root (git-ignored); processes are found again by the
PIDs recorded there and are only signalled if their command line still names that directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from e2e.harness.binaries import REPO_ROOT, BinariesMissing
from e2e.harness.cluster import APISERVER_GRACE, LocalCluster
from e2e.harness.manifests import MANIFESTS, install, load_kustomization
from e2e.harness.processes import StartError, pid_alive, pid_cmdline, pids_mentioning, terminate_pid

STATE_DIR = REPO_ROOT / ".stablelb" / "cluster"
STATE_FILE = STATE_DIR / "state.json"


def _ours(pid: int) -> bool:
    return pid_alive(pid) and str(STATE_DIR) in pid_cmdline(pid)


def _read_state() -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads(STATE_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return state


def _running(state: dict[str, object]) -> bool:
    pids = state.get("pids", {})
    return isinstance(pids, dict) and bool(pids) and all(_ours(int(p)) for p in pids.values())


def up(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is not None and _running(state):
        print(f"# already running: {state['server']}")
        print(f"export KUBECONFIG={state['kubeconfig']}")
        return 0
    down(args, quiet=True)
    try:
        cluster = LocalCluster.start(
            dual_stack=not args.single_stack,
            watch_cache=not args.no_watch_cache,
            name="dev",
            workdir=STATE_DIR,
            die_with_parent=False,
        )
    except (StartError, BinariesMissing) as err:
        print(f"cluster-up failed: {err}", file=sys.stderr)
        return 1
    install(cluster.api, load_kustomization(MANIFESTS))
    sa_kubeconfig = cluster.service_account_kubeconfig("kube-system", "stablelb-controller")
    STATE_FILE.write_text(
        json.dumps(
            {
                "server": cluster.server,
                "kubeconfig": str(cluster.kubeconfig),
                "controller_kubeconfig": str(sa_kubeconfig),
                "etcd_url": cluster.etcd_url,
                "pids": cluster.pids,
                "dual_stack": cluster.dual_stack,
            },
            indent=2,
        )
    )
    print(f"# kube-apiserver {cluster.server} (etcd {cluster.etcd_url}); manifests/ applied")
    print(f"# the controller's ServiceAccount kubeconfig: {sa_kubeconfig}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def down(args: argparse.Namespace, *, quiet: bool = False) -> int:
    state = _read_state() or {}
    pids = state.get("pids", {})
    order = ["kube-apiserver", "etcd"]  # kube-apiserver first: it can hang forever once etcd is gone
    if isinstance(pids, dict):
        for name in order:
            pid = pids.get(name)
            if pid is not None and _ours(int(pid)):
                terminate_pid(int(pid), grace=APISERVER_GRACE)
    # Anything else still naming the state directory (a crashed `up`) goes too.
    for pid in pids_mentioning(str(STATE_DIR)):
        terminate_pid(pid, grace=APISERVER_GRACE)
    strays = pids_mentioning(str(STATE_DIR))
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    if strays:
        print(f"processes still running: {strays}", file=sys.stderr)
        return 1
    if not quiet:
        print("# local control plane stopped" if state else "# no local control plane was running")
    return 0


def status(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None or not _running(state):
        print("# not running (make cluster-up)")
        return 1
    print(f"# running: {state['server']} pids {state['pids']}")
    print(f"export KUBECONFIG={state['kubeconfig']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start etcd + kube-apiserver and print export KUBECONFIG=...")
    p_up.add_argument("--single-stack", action="store_true", help="IPv4-only service CIDR")
    p_up.add_argument("--no-watch-cache", action="store_true", help="--watch-cache-sizes=services#0")
    p_up.set_defaults(func=up)
    sub.add_parser("down", help="stop it and remove its state").set_defaults(func=down)
    sub.add_parser("status", help="is it running?").set_defaults(func=status)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
