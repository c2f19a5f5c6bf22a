"""The `kubectl-stablelb` entry point: flags, loading, dispatch and errors that say what to do."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controller import __version__
from controller.config import ConfigError, parse_bool, parse_duration
from controller.ipam import ServiceKey
from controller.kube.client import ApiError, KubeClient
from controller.kube.resources import SERVICES

from . import explain as explain_cmd
from . import plan as plan_cmd
from . import status as status_cmd
from .cluster import CliError, LeaseRef, connect, describe_api_error, get_optional, kubeconfig_path, load
from .render import Style, dump_json
from .replay import Policy, replay

DESCRIPTION = """Read-only answers from stablelb's own allocator, run on the cluster's current state.

  kubectl stablelb status                        pools' usage, pending Services, the leader
  kubectl stablelb explain svc/NAME -n NS        why a Service has, would get or lacks an IP
  kubectl stablelb plan -f pool.yaml             what applying an IPPool edit would do
  kubectl stablelb plan --delete NAME            what deleting an IPPool would do

Nothing is written. Pass the controller's own flags (--lb-class, --handle-unclassed, --orphaned-ips,
--reclaim-window) when it does not run with the defaults."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table (default) or json"
    )
    p.add_argument("--lb-class", default="stablelb.io/lb", help="the controller's --lb-class")
    p.add_argument("--handle-unclassed", type=_bool, default=True, help="the controller's --handle-unclassed")
    p.add_argument("--orphaned-ips", choices=("retain", "reassign"), default="retain",
                   help="the controller's --orphaned-ips")  # fmt: skip
    p.add_argument(
        "--reclaim-window", type=_duration, default=600.0, help="the controller's --reclaim-window"
    )
    p.add_argument("--lease-namespace", default="kube-system", help="the leader Lease's namespace")
    p.add_argument("--lease-name", default="stablelb-controller", help="the leader Lease's name")


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl stablelb", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kubectl-stablelb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{status,explain,plan}")
    p = sub.add_parser("status", help="pools' usage, pending Services and the current leader")
    _common(p)
    p = sub.add_parser("explain", help="why a Service has, would get or lacks an address")
    p.add_argument("target", help="svc/NAME (or NAME)")
    p.add_argument("-n", "--namespace", help="the Service's namespace (default: the context's, else default)")
    _common(p)
    p = sub.add_parser("plan", help="what an IPPool edit or deletion would do, before it is applied")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-f", "--filename", help="IPPool YAML or JSON to apply ('-': stdin)")
    what.add_argument("--delete", metavar="NAME", action="append", help="an IPPool to delete (repeatable)")
    _common(p)
    return parser


def context_namespace(path: Path, context: str | None) -> str:
    try:
        config = yaml.safe_load(path.read_text()) or {}
        name = context or config.get("current-context")
        for entry in config.get("contexts") or ():
            if entry.get("name") == name:
                return str((entry.get("context") or {}).get("namespace") or "default")
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return "default"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = Policy(
        lb_class=args.lb_class,
        handle_unclassed=args.handle_unclassed,
        reassign_orphans=args.orphaned_ips == "reassign",
        reclaim_window=args.reclaim_window,
    )
    applied = plan_cmd.read_pool_file(args.filename) if args.command == "plan" and args.filename else []
    client = await connect(args.kubeconfig, args.context)
    try:
        return await _answer(client, args, policy, applied)
    finally:
        await client.close()


async def _answer(
    client: KubeClient, args: argparse.Namespace, policy: Policy, applied: list[dict[str, Any]]
) -> dict[str, Any]:
    state = await load(client, LeaseRef(args.lease_namespace, args.lease_name))
    replayed = replay(state, policy)
    if args.command == "status":
        return status_cmd.status_data(replayed)
    if args.command == "plan":
        return plan_cmd.plan(replayed, applied, args.delete or [])
    namespace = args.namespace or context_namespace(kubeconfig_path(args.kubeconfig), args.context)
    key = ServiceKey(namespace, explain_cmd.parse_target(args.target))
    if key in replayed.decisions:
        return explain_cmd.explanation_data(replayed, key)
    obj = await get_optional(client, SERVICES.path(key.namespace, key.name))
    if obj is None:
        raise CliError(f"Service {key} not found: check the name and -n NAMESPACE (kubectl get svc -A)")
    why = explain_cmd.not_handled_why(obj, policy) or "it is not in the LoadBalancer Services listed just now"
    return explain_cmd.not_handled_data(key, why)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data = asyncio.run(run(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"error: {describe_api_error(exc)}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(
            f"error: cannot reach the API server ({exc or type(exc).__name__}): check the kubeconfig's "
            "server and that the cluster is up (kubectl cluster-info)",
            file=sys.stderr,
        )
        return 1
    if args.output == "json":
        print(dump_json(data))
        return 0
    style = Style.for_stream(sys.stdout)
    renderers = {"status": status_cmd.render, "explain": explain_cmd.render, "plan": plan_cmd.render}
    print(renderers[args.command](data, style))
    return 0


if __name__ == "__main__":
    sys.exit(main())
