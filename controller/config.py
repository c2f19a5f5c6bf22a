"""Command-line flags and environment of the controller process (design §3.5).

Flags follow Kubernetes component conventions: ``--flag=value`` or ``--flag value``, booleans as
``--flag``, ``--flag=true`` or ``--flag=false``, durations in Go syntax (``10m``, ``1h30m``, ``500ms``).
A flag always wins over its environment fallback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import socket
import textwrap
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

__all__ = [
    "DEFAULT_HEALTH_PROBE_ADDR",
    "DEFAULT_LB_CLASS",
    "DEFAULT_LEASE_NAME",
    "DEFAULT_LEASE_NAMESPACE",
    "DEFAULT_METRICS_ADDR",
    "DISABLED_ADDR",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "ORPHANED_IPS_POLICIES",
    "ConfigError",
    "Settings",
    "build_parser",
    "default_identity",
    "format_duration",
    "parse_args",
    "parse_bool",
    "parse_duration",
    "parse_host_port",
    "validate_settings",
]

DEFAULT_LB_CLASS = "stablelb.io/lb"
DEFAULT_LEASE_NAMESPACE = "kube-system"
DEFAULT_LEASE_NAME = "stablelb-controller"
# controller-runtime's conventions: metrics and probes on separate listeners, so /metrics can sit behind
# kube-rbac-proxy while the kubelet probes stay plain HTTP; "0" turns a listener off.
DEFAULT_METRICS_ADDR = ":8080"
DEFAULT_HEALTH_PROBE_ADDR = ":8081"
DISABLED_ADDR = "0"
ORPHANED_IPS_POLICIES = ("retain", "reassign")
LOG_FORMATS = ("json", "text")
# "warn" is accepted as an alias and normalised to "warning".
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

T = TypeVar("T")

OrphanedIPsPolicy = Literal["retain", "reassign"]
LogFormat = Literal["json", "text"]


class ConfigError(ValueError):
    """An invalid setting; the message says what is wrong and how to fix it."""


def default_identity(env: Mapping[str, str] | None = None) -> str:
    """Leader-election identity: ``$POD_NAME`` (else the hostname) plus a random suffix.

    The suffix keeps two processes on one host (or a restarted pod reusing its name) from being mistaken for
    the holder of a lease the other one took, as client-go's components do.
    """
    env = os.environ if env is None else env
    base = env.get("POD_NAME") or socket.gethostname() or "stablelb"
    return f"{base}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Settings:
    """Validated process settings. Durations are seconds (float)."""

    # Path of a kubeconfig file; None means in-cluster service-account configuration.
    kubeconfig: str | None = None
    # spec.loadBalancerClass this controller owns.
    lb_class: str = DEFAULT_LB_CLASS
    # Also handle LoadBalancer Services that set no loadBalancerClass.
    handle_unclassed: bool = True
    # What happens to an assigned IP whose pool shrank or vanished: keep it (flagged) or move it.
    orphaned_ips: OrphanedIPsPolicy = "retain"
    # A Service re-created under the same namespace/name within this window gets its old IP back; 0 disables.
    reclaim_window: float = 600.0
    lease_namespace: str = DEFAULT_LEASE_NAMESPACE
    lease_name: str = DEFAULT_LEASE_NAME
    identity: str = field(default_factory=default_identity)
    leader_elect: bool = True
    workers: int = 4
    # host:port of /metrics and of /healthz, /livez, /readyz; an empty host binds every interface, "0"
    # serves nothing. The same address for both serves everything on one listener.
    metrics_bind_address: str = DEFAULT_METRICS_ADDR
    health_probe_bind_address: str = DEFAULT_HEALTH_PROBE_ADDR
    log_level: str = "info"
    log_format: LogFormat = "json"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    # Messages about deprecated flags that were used, logged once logging is set up.
    deprecations: tuple[str, ...] = ()


# --- value parsers -----------------------------------------------------------------------------------------

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


def parse_bool(text: str) -> bool:
    """Parse a boolean the way Go's strconv.ParseBool does (case-insensitive), plus yes/no/on/off."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"invalid boolean {text!r}: use true or false")


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (``1h30m``, ``10m``, ``2.5s``, ``300ms``) into seconds.

    A bare number is taken as seconds, so ``--reclaim-window=600`` also works. Negative values are rejected:
    no setting of this controller has a meaning for them.
    """
    raw = text.strip()
    if not raw:
        raise ConfigError("empty duration: use a Go duration such as 30s, 10m or 1h30m")
    if raw.startswith("-"):
        raise ConfigError(f"negative duration {text!r}: use a value of 0s or more")
    body = raw[1:] if raw.startswith("+") else raw
    try:
        return float(body)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ConfigError(
                f"invalid duration {text!r}: use a number with a unit (ns, us, ms, s, m, h), "
                "for example 30s, 10m or 1h30m"
            )
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Render seconds as a short Go-style duration: ``10m``, ``1h30m``, ``2s``, ``500ms``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    frac = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs or frac:
        parts.append(f"{secs + frac:g}s")
    return "".join(parts)


def parse_host_port(addr: str) -> tuple[str | None, int]:
    """Split ``:8080``, ``127.0.0.1:8080``, ``[::1]:8080`` or ``name:8080`` into (host, port).

    The host is None when empty (bind every interface). Port 0 asks the OS for a free port.
    """
    text = addr.strip()
    hint = "use HOST:PORT, for example :8080, 127.0.0.1:8080 or [::1]:8080"
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ConfigError(f"invalid address {addr!r}: {hint}")
        host: str | None = text[1:end]
        port_text = text[end + 2 :]
        if not host:
            raise ConfigError(f"invalid address {addr!r}: empty IPv6 host in brackets; {hint}")
    else:
        head, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"invalid address {addr!r}: missing port; {hint}")
        if ":" in head:
            raise ConfigError(f"invalid address {addr!r}: put an IPv6 host in brackets, as in [::1]:8080")
        host = head or None
    if not port_text.isdigit():
        raise ConfigError(f"invalid port in address {addr!r}: {hint}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"invalid port {port} in address {addr!r}: use a port between 0 and 65535")
    return host, port


# --- validation --------------------------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _check_lb_class(value: str) -> None:
    hint = "use a label-style name such as stablelb.io/lb"
    if not value:
        raise ConfigError(f"--lb-class must not be empty: {hint}")
    prefix, _, name = value.rpartition("/")
    if "/" in prefix:
        raise ConfigError(f"--lb-class {value!r} has more than one '/': {hint}")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ConfigError(f"--lb-class {value!r}: the prefix must be a lowercase DNS subdomain; {hint}")
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        raise ConfigError(
            f"--lb-class {value!r}: the name part must be 1-63 alphanumerics, '-', '_' or '.', "
            f"starting and ending alphanumeric; {hint}"
        )


def validate_settings(s: Settings) -> None:
    """Raise ConfigError naming the first invalid setting and what to do about it."""
    _check_lb_class(s.lb_class)
    if s.orphaned_ips not in ORPHANED_IPS_POLICIES:
        raise ConfigError(f"--orphaned-ips must be retain or reassign, not {s.orphaned_ips!r}")
    if s.reclaim_window < 0:
        raise ConfigError("--reclaim-window must be 0 (disabled) or a positive duration such as 10m")
    if len(s.lease_namespace) > 63 or not _DNS1123_LABEL.match(s.lease_namespace):
        raise ConfigError(
            f"--lease-namespace {s.lease_namespace!r} is not a valid namespace name: use lowercase "
            "alphanumerics and '-', at most 63 characters (or set POD_NAMESPACE)"
        )
    if len(s.lease_name) > 253 or not _DNS1123_SUBDOMAIN.match(s.lease_name):
        raise ConfigError(
            f"--lease-name {s.lease_name!r} is not a valid object name: use lowercase alphanumerics, '-' "
            "and '.', at most 253 characters"
        )
    if not s.identity.strip():
        raise ConfigError("--identity must not be empty: omit it to use $POD_NAME (or the hostname) + suffix")
    if s.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {s.workers}")
    for flag, addr in (
        ("--metrics-bind-address", s.metrics_bind_address),
        ("--health-probe-bind-address", s.health_probe_bind_address),
    ):
        if addr == DISABLED_ADDR:
            continue
        try:
            parse_host_port(addr)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    if s.log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {s.log_level!r}")
    if s.log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format must be json or text, not {s.log_format!r}")
    if s.leader_elect:
        _check_leader_election(s)


def _check_leader_election(s: Settings) -> None:
    for flag, value in (
        ("--leader-elect-lease-duration", s.lease_duration),
        ("--leader-elect-renew-deadline", s.renew_deadline),
        ("--leader-elect-retry-period", s.retry_period),
    ):
        if value <= 0:
            raise ConfigError(f"{flag} must be a positive duration such as 2s")
    if s.lease_duration <= s.renew_deadline:
        raise ConfigError(
            f"--leader-elect-lease-duration ({format_duration(s.lease_duration)}) must be greater than "
            f"--leader-elect-renew-deadline ({format_duration(s.renew_deadline)}): raise the lease duration "
            "or lower the renew deadline (defaults 15s and 10s)"
        )
    # client-go jitters the retry period by up to 20%, so the renew deadline must leave room for that.
    if s.renew_deadline <= 1.2 * s.retry_period:
        raise ConfigError(
            f"--leader-elect-renew-deadline ({format_duration(s.renew_deadline)}) must be greater than 1.2 x "
            f"--leader-elect-retry-period ({format_duration(s.retry_period)}): lower the retry period or "
            "raise the renew deadline (defaults 10s and 2s)"
        )


# --- argparse ----------------------------------------------------------------------------------------------


def _typed(fn: Callable[[str], T]) -> Callable[[str], T]:
    """Turn our ConfigError into argparse's "argument --flag: message" error."""

    def convert(text: str) -> T:
        try:
            return fn(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"invalid integer {text!r}: use a whole number such as 4") from None


def _choice(options: Sequence[str], aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        value = (aliases or {}).get(value, value)
        if value not in options:
            raise ConfigError(f"invalid choice {text!r}: use one of {', '.join(options)}")
        return value

    return convert


class _HelpFormatter(argparse.HelpFormatter):
    # Names such as stablelb-controller and --leader-elect-renew-deadline must not be split at hyphens.
    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = textwrap.wrap(" ".join(text.split()), width - len(indent), break_on_hyphens=False)
        return "\n".join(indent + line for line in lines)


def _version() -> str:
    try:
        return importlib.metadata.version("stablelb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser(prog: str = "stablelb-controller") -> argparse.ArgumentParser:
    """The argparse parser behind parse_args (exposed for --help rendering and docs)."""
    d = Settings(identity="-")
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Assigns IPs from IPPool objects to Services of type LoadBalancer and keeps them stable. "
            "Durations use Go syntax (30s, 10m, 1h30m; a bare number is seconds). Booleans accept "
            "--flag, --flag=true or --flag=false. Flags override environment variables. OpenTelemetry "
            "tracing is configured with the standard OTEL_* variables (OTLP/HTTP export when "
            "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set)."
        ),
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    bool_t = _typed(parse_bool)
    dur_t = _typed(parse_duration)

    def add_bool(flag: str, dest: str, default: bool, text: str) -> None:
        p.add_argument(
            flag,
            dest=dest,
            nargs="?",
            const=True,
            default=None,
            type=bool_t,
            metavar="true|false",
            help=f"{text} (default: {str(default).lower()})",
        )

    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        default=None,
        help="kubeconfig file to reach the API server (env: KUBECONFIG; default: in-cluster service account)",
    )
    p.add_argument(
        "--lb-class",
        dest="lb_class",
        metavar="CLASS",
        default=None,
        help=f"spec.loadBalancerClass of the Services this controller handles (default: {d.lb_class})",
    )
    add_bool(
        "--handle-unclassed",
        "handle_unclassed",
        d.handle_unclassed,
        "also handle LoadBalancer Services that set no loadBalancerClass",
    )
    p.add_argument(
        "--orphaned-ips",
        dest="orphaned_ips",
        metavar="retain|reassign",
        type=_typed(_choice(ORPHANED_IPS_POLICIES)),
        default=None,
        help=(
            "an assigned IP that is no longer in any pool (pool shrunk or deleted) is kept and flagged "
            "with the IPOutsidePool condition (retain) or moved to a new IP (reassign) "
            f"(default: {d.orphaned_ips})"
        ),
    )
    p.add_argument(
        "--reclaim-window",
        dest="reclaim_window",
        metavar="DURATION",
        type=dur_t,
        default=None,
        help=(
            "a Service deleted and re-created under the same namespace/name within this window gets its old "
            f"IP back when still free; 0 disables (default: {format_duration(d.reclaim_window)})"
        ),
    )
    p.add_argument(
        "--lease-namespace",
        dest="lease_namespace",
        metavar="NAMESPACE",
        default=None,
        help=f"namespace of the leader-election Lease (env: POD_NAMESPACE; default: {d.lease_namespace})",
    )
    p.add_argument(
        "--lease-name",
        dest="lease_name",
        metavar="NAME",
        default=None,
        help=f"name of the leader-election Lease (default: {d.lease_name})",
    )
    p.add_argument(
        "--identity",
        metavar="ID",
        default=None,
        help=(
            "holder identity written to the Lease; must differ between replicas (env: POD_NAME plus a random "
            "suffix; default: hostname plus a random suffix)"
        ),
    )
    add_bool(
        "--leader-elect",
        "leader_elect",
        d.leader_elect,
        "take a Lease before writing, so only one replica acts; false runs as the only writer",
    )
    p.add_argument(
        "--leader-elect-lease-duration",
        dest="lease_duration",
        metavar="DURATION",
        type=dur_t,
        default=None,
        help=(
            "how long a standby waits after the last observed renewal before taking the Lease "
            f"(default: {format_duration(d.lease_duration)})"
        ),
    )
    p.add_argument(
        "--leader-elect-renew-deadline",
        dest="renew_deadline",
        metavar="DURATION",
        type=dur_t,
        default=None,
        help=(
            "how long the leader keeps retrying to renew before it gives up leadership and exits "
            f"(default: {format_duration(d.renew_deadline)})"
        ),
    )
    p.add_argument(
        "--leader-elect-retry-period",
        dest="retry_period",
        metavar="DURATION",
        type=dur_t,
        default=None,
        help=(
            "interval between attempts to acquire or renew the Lease "
            f"(default: {format_duration(d.retry_period)})"
        ),
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=_typed(_parse_int),
        default=None,
        help=f"number of concurrent reconcile workers (default: {d.workers})",
    )
    p.add_argument(
        "--metrics-bind-address",
        dest="metrics_bind_address",
        metavar="HOST:PORT",
        default=None,
        help=(
            "address /metrics is served on; an empty host listens on every interface, IPv6 hosts go in "
            f"brackets ([::1]:8080), 0 turns it off (default: {d.metrics_bind_address})"
        ),
    )
    p.add_argument(
        "--health-probe-bind-address",
        dest="health_probe_bind_address",
        metavar="HOST:PORT",
        default=None,
        help=(
            "address /healthz, /livez and /readyz are served on; the same address as "
            f"--metrics-bind-address serves both on one listener (default: {d.health_probe_bind_address})"
        ),
    )
    p.add_argument(
        "--http-addr",
        dest="http_addr",
        metavar="HOST:PORT",
        default=None,
        help=(
            "deprecated: serves /metrics and the probes on one address, like setting "
            "--metrics-bind-address and --health-probe-bind-address to it"
        ),
    )
    p.add_argument(
        "--log-level",
        dest="log_level",
        metavar="LEVEL",
        type=_typed(_choice(LOG_LEVELS, {"warn": "warning"})),
        default=None,
        help=f"minimum level logged: {', '.join(LOG_LEVELS)} (default: {d.log_level})",
    )
    p.add_argument(
        "--log-format",
        dest="log_format",
        metavar="json|text",
        type=_typed(_choice(LOG_FORMATS)),
        default=None,
        help=(
            "json: one JSON object per line with ts, level, logger, msg and trace_id/span_id inside a trace; "
            f"text: human-readable lines (default: {d.log_format})"
        ),
    )
    return p


def _resolve_kubeconfig(flag: str | None, env: Mapping[str, str]) -> str | None:
    if flag is not None:
        if not flag:
            raise ConfigError("--kubeconfig is empty: pass a file path, or omit it to use in-cluster config")
        path, source = flag, "--kubeconfig"
    else:
        env_value = env.get("KUBECONFIG", "")
        if not env_value:
            return None
        if os.pathsep in env_value:
            raise ConfigError(
                f"KUBECONFIG lists several files ({env_value!r}); stablelb reads a single file: "
                "pass --kubeconfig=PATH"
            )
        path, source = env_value, "KUBECONFIG"
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(
            f"kubeconfig file {path!r} (from {source}) does not exist: fix the path, or unset it to use "
            "the in-cluster service account"
        )
    return path


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _listeners(ns: argparse.Namespace, defaults: Settings) -> tuple[str, str, tuple[str, ...]]:
    """(metrics address, probe address, deprecation messages) from the new flags and the old --http-addr.

    --http-addr stands for both new flags; one given explicitly wins for its own listener.
    """
    metrics, probes, old = ns.metrics_bind_address, ns.health_probe_bind_address, ns.http_addr
    if old is None:
        probes = _or(probes, defaults.health_probe_bind_address)
        return _or(metrics, defaults.metrics_bind_address), probes, ()
    try:
        parse_host_port(old)
    except ConfigError as exc:
        raise ConfigError(f"--http-addr: {exc}") from None
    metrics, probes = _or(metrics, old), _or(probes, old)
    message = (
        f"--http-addr is deprecated and will be removed: it stands for --metrics-bind-address and "
        f"--health-probe-bind-address (now {metrics} and {probes}); pass those instead (the same address for "
        "both keeps one listener)"
    )
    return metrics, probes, (message,)


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags (default: sys.argv[1:]) with environment fallbacks (default: os.environ).

    Invalid input exits with status 2 after printing the usage and a message that says what to change.
    """
    env = os.environ if env is None else env
    parser = build_parser()
    ns = parser.parse_args(None if argv is None else list(argv))
    defaults = Settings(identity="-")

    try:
        kubeconfig = _resolve_kubeconfig(ns.kubeconfig, env)
        identity = ns.identity if ns.identity is not None else default_identity(env)
        metrics_addr, probe_addr, deprecations = _listeners(ns, defaults)
        settings = Settings(
            kubeconfig=kubeconfig,
            lb_class=_or(ns.lb_class, defaults.lb_class),
            handle_unclassed=_or(ns.handle_unclassed, defaults.handle_unclassed),
            orphaned_ips=cast(OrphanedIPsPolicy, _or(ns.orphaned_ips, defaults.orphaned_ips)),
            reclaim_window=_or(ns.reclaim_window, defaults.reclaim_window),
            lease_namespace=_or(ns.lease_namespace, env.get("POD_NAMESPACE") or defaults.lease_namespace),
            lease_name=_or(ns.lease_name, defaults.lease_name),
            identity=identity,
            leader_elect=_or(ns.leader_elect, defaults.leader_elect),
            workers=_or(ns.workers, defaults.workers),
            metrics_bind_address=metrics_addr,
            health_probe_bind_address=probe_addr,
            log_level=_or(ns.log_level, defaults.log_level),
            log_format=cast(LogFormat, _or(ns.log_format, defaults.log_format)),
            lease_duration=_or(ns.lease_duration, defaults.lease_duration),
            renew_deadline=_or(ns.renew_deadline, defaults.renew_deadline),
            retry_period=_or(ns.retry_period, defaults.retry_period),
            deprecations=deprecations,
        )
        validate_settings(settings)
    except ConfigError as exc:
        parser.error(str(exc))
    return settings
