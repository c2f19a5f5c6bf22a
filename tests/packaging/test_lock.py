"""requirements.lock (runtime) and requirements-build.lock (wheel build) agree with pyproject.toml.

The image installs only from these locks (--require-hashes), so a dependency added to, dropped from or
re-ranged in pyproject.toml without `make lock` must fail here, offline, rather than in a docker build.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "stablelb"


@dataclass
class Pin:
    name: str
    version: str
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_VIA_ONE = re.compile(r"^\s*# via (.+)$")
_VIA_MORE = re.compile(r"^\s*#   (.+)$")


def parse_lock(text: str) -> dict[str, Pin]:
    """pip-compile's output: `name==version \\` lines, `--hash=` continuations, `# via` annotations."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in text.splitlines():
        if m := _PIN.match(line):
            current = Pin(canonicalize_name(m[1]), m[2])
            pins[current.name] = current
            in_via = False
        elif current is not None and (h := _HASH.search(line)):
            current.hashes.append(h[1])
        elif current is not None and (v := _VIA_ONE.match(line)):
            in_via = not v[1].strip()
            if v[1].strip():
                current.via.add(v[1].strip())
        elif current is not None and in_via and (v := _VIA_MORE.match(line)):
            current.via.add(v[1].strip())
        elif current is not None and line.strip() == "# via":
            in_via = True
    return pins


def _source_name(via: str) -> str:
    # "stablelb (pyproject.toml)" names the project itself; anything else is a locked package.
    return PROJECT if via.startswith(f"{PROJECT} (") else canonicalize_name(via.split()[0])


def check_lock(requirements: list[str], lock_text: str) -> list[str]:
    """Every way the lock can disagree with the requirements, as readable lines (empty: they agree)."""
    problems: list[str] = []
    pins = parse_lock(lock_text)
    if not pins:
        return ["the lock pins nothing"]
    direct: dict[str, Requirement] = {}
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11"}):
            continue
        direct[canonicalize_name(req.name)] = req
    for name, req in direct.items():
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{req} is in pyproject.toml but not in the lock")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"the lock pins {name}=={pin.version}, outside pyproject.toml's {req}")
    for pin in pins.values():
        if not pin.hashes:
            problems.append(f"{pin.name}=={pin.version} has no --hash")
        sources = {_source_name(v) for v in pin.via}
        if PROJECT in sources and pin.name not in direct:
            problems.append(f"the lock says pyproject.toml requires {pin.name}, but it no longer does")
    # Every pin must be needed: reachable from a direct requirement through `# via` edges.
    needed = set(direct)
    changed = True
    while changed:
        changed = False
        for pin in pins.values():
            if pin.name not in needed and {_source_name(v) for v in pin.via} & needed:
                needed.add(pin.name)
                changed = True
    problems += [f"{n}=={pins[n].version} is locked but nothing requires it" for n in pins if n not in needed]
    return problems


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


FIX = "run `make lock` and commit requirements.lock / requirements-build.lock"


def test_runtime_lock_matches_pyproject_dependencies() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    problems = check_lock(project["dependencies"], (ROOT / "requirements.lock").read_text())
    assert problems == [], f"{FIX}:\n" + "\n".join(problems)


def test_build_lock_matches_build_system_requires() -> None:
    build_system = _pyproject()["build-system"]
    assert isinstance(build_system, dict)
    problems = check_lock(build_system["requires"], (ROOT / "requirements-build.lock").read_text())
    assert problems == [], f"{FIX}:\n" + "\n".join(problems)


def test_the_check_sees_added_dropped_and_reranged_dependencies() -> None:
    # The check itself must bite: each kind of drift is reported against the real lock.
    deps = list(_pyproject()["project"]["dependencies"])  # type: ignore[index]
    lock = (ROOT / "requirements.lock").read_text()
    assert check_lock(deps, lock) == []
    added = check_lock([*deps, "rich>=13"], lock)
    assert added == ["rich>=13 is in pyproject.toml but not in the lock"]
    dropped = [d for d in deps if not d.startswith("orjson")]
    assert "the lock says pyproject.toml requires orjson, but it no longer does" in check_lock(dropped, lock)
    reranged = [("aiohttp>=99" if d.startswith("aiohttp") else d) for d in deps]
    assert any("outside pyproject.toml's aiohttp>=99" in p for p in check_lock(reranged, lock))
