"""The runtime dependencies are exactly what the controller imports (PyYAML only where it is used), so the
image carries nothing the controller does not need and misses nothing it does."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# Distribution -> the top-level module it provides (where the names differ or several share one).
MODULE_OF = {
    "kubernetes-asyncio": "kubernetes_asyncio",
    "opentelemetry-api": "opentelemetry",
    "opentelemetry-sdk": "opentelemetry",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry",
    "prometheus-client": "prometheus_client",
    "pyyaml": "yaml",
}


def third_party_imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in ("controller",)}


def test_runtime_dependencies_are_what_the_controller_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    provided = {MODULE_OF.get(name, name.replace("-", "_")) for name in declared}
    imported = third_party_imports(ROOT / "controller")
    assert imported == provided, (
        f"imported but not declared: {sorted(imported - provided)}; "
        f"declared but never imported: {sorted(provided - imported)}"
    )
    # Every declared distribution is accounted for (an OTel exporter shares its module with the API).
    assert {canonicalize_name(n) for n in declared} <= set(MODULE_OF) | {"aiohttp", "orjson"}
