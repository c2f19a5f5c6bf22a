"""Which proxy a request to the API server goes through, with the environment rules client-go follows.

client-go uses Go's ``http.ProxyFromEnvironment``: ``HTTPS_PROXY`` (or ``https_proxy``) for https URLs,
``HTTP_PROXY`` for http ones, and ``NO_PROXY`` entries that are IP addresses, CIDR ranges (``10.96.0.0/12``,
the usual Service network), domain names (``example.com`` matches it and its subdomains, ``.example.com``
only subdomains), any of those with ``:port``, or ``*``. Loopback and ``localhost`` are never proxied.
Python's ``urllib.request.proxy_bypass`` knows no CIDR ranges, so a Service-network address listed that way
would still go to the proxy.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["NoProxy", "proxy_for"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _env(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def _split_host_port(entry: str) -> tuple[str, str]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address into (host, port or "")."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


@dataclass(frozen=True)
class NoProxy:
    """A parsed ``NO_PROXY`` list."""

    everything: bool
    networks: tuple[_Network, ...]
    addresses: tuple[tuple[_Address, str], ...]
    domains: tuple[tuple[str, bool, str], ...]  # (".suffix", also the bare name, port)

    @classmethod
    def parse(cls, text: str) -> NoProxy:
        everything = False
        networks: list[_Network] = []
        addresses: list[tuple[_Address, str]] = []
        domains: list[tuple[str, bool, str]] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                everything = True
                continue
            if "/" in entry:
                # As in Go, an entry that is no CIDR range matches nothing.
                with contextlib.suppress(ValueError):
                    networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            host, port = _split_host_port(entry)
            try:
                addresses.append((ipaddress.ip_address(host), port))
                continue
            except ValueError:
                pass
            if host.startswith("*."):
                host = host[1:]
            bare = not host.startswith(".")
            domains.append((host if not bare else "." + host, bare, port))
        return cls(everything, tuple(networks), tuple(addresses), tuple(domains))

    def bypasses(self, host: str, port: str) -> bool:
        """True when a request to host:port must not go through the proxy."""
        host = host.lower().rstrip(".")
        if host == "localhost":
            return True
        try:
            ip: _Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.is_loopback:
            return True
        if self.everything:
            return True
        if ip is not None:
            if any(ip in net for net in self.networks):
                return True
            return any(ip == addr and (not p or p == port) for addr, p in self.addresses)
        for suffix, bare, p in self.domains:
            if (host.endswith(suffix) or (bare and host == suffix[1:])) and (not p or p == port):
                return True
        return False


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL for a request to ``url`` under the environment ``env``, or None to connect directly."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        proxy = _env(env, "HTTPS_PROXY", "https_proxy")
    elif scheme == "http":
        proxy = _env(env, "HTTP_PROXY", "http_proxy")
    else:
        return None
    if not proxy:
        return None
    port = str(parts.port or (443 if scheme == "https" else 80))
    if NoProxy.parse(_env(env, "NO_PROXY", "no_proxy")).bypasses(parts.hostname or "", port):
        return None
    # Go takes a proxy without a scheme as http://.
    return proxy if "://" in proxy else f"http://{proxy}"
