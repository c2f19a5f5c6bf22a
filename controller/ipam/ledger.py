"""The release ledger: the allocator's reuse history in the form kept in an IPPool's status.

It is a hint, never a source of truth (design §2, invariant 4): it only says in which order free addresses
were released and by whom, so a new leader hands out never-used addresses first and recently released ones
last, and gives a Service re-created under the same name its old address back. Whatever it says, an address
a Service holds in its status is never touched: restore ignores entries for held addresses.

The form is read tolerantly: every entry that is malformed, duplicated, outside the pool, from the future or
of the wrong type is left out and described in one problem message; nothing here raises on any input.

Bound: the most recent ``LEDGER_MAX_ENTRIES`` releases per pool, not the reclaim window. The reuse order
matters past the window (an address released an hour ago must still come after the never-used ones), while
an entry older than the window simply no longer reclaims; a count bound also caps the size of every status
write (about 150 bytes per entry) whatever the churn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .addresses import AddressError, int_to_ip, parse_ip
from .model import ServiceKey

LEDGER_MAX_ENTRIES = 1024
LEDGER_FIELD = "releaseLedger"  # the key under an IPPool's status
# The Service was deleted or stopped being ours: its name may reclaim the address within the window.
SERVICE_GONE = "ServiceGone"
MOVED = "Moved"  # the Service moved off the address and still exists
# A leader whose wall clock runs behind the previous one's would otherwise drop its newest entries.
MAX_CLOCK_SKEW = 60.0
_PROBLEMS_SHOWN = 5


@dataclass(frozen=True)
class LedgerEntry:
    ip: str  # canonical text
    released_at: float  # wall clock, epoch seconds
    service: ServiceKey
    uid: str = ""
    service_gone: bool = False


@dataclass(frozen=True)
class Ledger:
    entries: tuple[LedgerEntry, ...] = ()  # oldest release first: the order is the reuse order
    truncated: bool = False


def format_time(epoch: float) -> str:
    """RFC3339 to the second, as Kubernetes writes timestamps, so a round trip compares equal."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_to_status(ledger: Ledger) -> dict[str, Any]:
    """The ``status.releaseLedger`` object."""
    return {
        "entries": [
            {
                "ip": e.ip,
                "releasedAt": format_time(e.released_at),
                "service": str(e.service),
                "uid": e.uid,
                "reason": SERVICE_GONE if e.service_gone else MOVED,
            }
            for e in ledger.entries
        ],
        "truncated": ledger.truncated,
    }


def pool_ledger(obj: Mapping[str, Any]) -> tuple[Ledger, str | None]:
    """The ledger an IPPool object (a dict from the API) carries, read as ``parse_ledger`` reads it."""
    status = obj.get("status")
    raw = status.get(LEDGER_FIELD) if isinstance(status, Mapping) else None
    return parse_ledger(raw)


def parse_ledger(
    raw: object,
    *,
    contains: Callable[[str, int], bool] | None = None,
    now: float | None = None,
    max_skew: float = MAX_CLOCK_SKEW,
) -> tuple[Ledger, str | None]:
    """The usable entries of ``status.releaseLedger`` and a message naming what was ignored, if anything.

    ``contains(family, value)`` says whether an address lies in the pool (entries outside it are ignored);
    ``now`` (wall clock) rejects entries released more than ``max_skew`` seconds in the future and brings
    those within it back to ``now``. A missing ledger is no problem: it is an empty one.
    """
    if raw is None:
        return Ledger(), None
    if not isinstance(raw, Mapping):
        return Ledger(), f"releaseLedger is a {_kind(raw)}, not an object; ignored"
    problems: list[str] = []
    raw_entries = raw.get("entries")
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        problems.append(f"entries is a {_kind(raw_entries)}, not a list")
        raw_entries = []
    truncated = raw.get("truncated", False)
    if not isinstance(truncated, bool):
        problems.append(f"truncated is a {_kind(truncated)}, not a boolean")
        truncated = False
    if len(raw_entries) > LEDGER_MAX_ENTRIES:
        problems.append(f"{len(raw_entries)} entries, more than {LEDGER_MAX_ENTRIES}: only the last kept")
        raw_entries = raw_entries[-LEDGER_MAX_ENTRIES:]
        truncated = True
    parsed: list[LedgerEntry] = []
    for index, item in enumerate(raw_entries):
        entry = _parse_entry(item, contains, now, max_skew)
        if isinstance(entry, str):
            problems.append(f"entry {index}: {entry}")
        else:
            parsed.append(entry)
    # One address may appear more than once: its last entry places it in the reuse order, an earlier one
    # can still be a deleted Service's to reclaim. The same release written twice is a duplicate.
    last_index = {e: i for i, e in enumerate(parsed)}
    kept = tuple(e for i, e in enumerate(parsed) if last_index[e] == i)
    duplicates = len(parsed) - len(kept)
    if duplicates:
        problems.append(f"{duplicates} duplicated entr{'y' if duplicates == 1 else 'ies'}: the last one kept")
    ledger = Ledger(kept, truncated)
    if not problems:
        return ledger, None
    shown = "; ".join(problems[:_PROBLEMS_SHOWN])
    more = f"; and {len(problems) - _PROBLEMS_SHOWN} more" if len(problems) > _PROBLEMS_SHOWN else ""
    return ledger, f"ignored part of releaseLedger ({shown}{more}); assigned IPs are not affected"


def _parse_entry(
    item: object, contains: Callable[[str, int], bool] | None, now: float | None, max_skew: float
) -> LedgerEntry | str:
    if not isinstance(item, Mapping):
        return f"a {_kind(item)}, not an object"
    ip_raw, at_raw, service_raw = item.get("ip"), item.get("releasedAt"), item.get("service")
    uid, reason = item.get("uid", ""), item.get("reason", MOVED)
    for name, value in (("ip", ip_raw), ("releasedAt", at_raw), ("service", service_raw), ("uid", uid),
                        ("reason", reason)):
        if not isinstance(value, str):
            return f"{name} is a {_kind(value)}, not a string"
    assert isinstance(ip_raw, str) and isinstance(at_raw, str) and isinstance(service_raw, str)
    assert isinstance(uid, str) and isinstance(reason, str)
    try:
        family, value = parse_ip(ip_raw)
    except AddressError as exc:
        return f"ip: {exc}"
    ip = int_to_ip(family, value)
    if contains is not None and not contains(family, value):
        return f"{ip} is outside the pool"
    at = _parse_time(at_raw)
    if at is None:
        return f"releasedAt {at_raw[:40]!r} is not an RFC3339 time with a zone"
    if now is not None and at > now:
        if at - now > max_skew:
            return f"releasedAt {at_raw} is in the future"
        at = now
    namespace, slash, name = service_raw.partition("/")
    if not slash or not namespace or not name or "/" in name:
        return f"service {service_raw[:80]!r} is not namespace/name"
    if reason not in (SERVICE_GONE, MOVED):
        return f"reason {reason[:40]!r} is not {SERVICE_GONE} or {MOVED}"
    return LedgerEntry(ip, at, ServiceKey(namespace, name), uid, reason == SERVICE_GONE)


def _parse_time(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        epoch = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return epoch if math.isfinite(epoch) and epoch >= 0 else None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
