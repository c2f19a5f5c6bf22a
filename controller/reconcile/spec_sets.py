"""Cluster-scoped objects whose specs the allocator takes as one set (IPPools, IPReservations): a fingerprint
that changes only when some spec does (status writes do not), and the parsed specs apart from the objects
whose shape is wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

Fingerprint = frozenset[tuple[str, Any, Any]]


def fingerprint(objs: Iterable[Mapping[str, Any]]) -> Fingerprint:
    """(name, uid, generation) of each object: equal sets mean no spec changed."""
    return frozenset(
        (o["metadata"]["name"], o["metadata"].get("uid"), o["metadata"].get("generation")) for o in objs
    )


def read_specs(
    objs: Iterable[Mapping[str, Any]], read: Callable[[Mapping[str, Any]], T | str]
) -> tuple[list[T], dict[str, str]]:
    """The specs `read` could parse, and name -> message for those it could not."""
    specs: list[T] = []
    shape_errors: dict[str, str] = {}
    for obj in objs:
        parsed = read(obj)
        if isinstance(parsed, str):
            shape_errors[obj["metadata"]["name"]] = parsed
        else:
            specs.append(parsed)
    return specs, shape_errors
