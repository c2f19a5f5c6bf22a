"""One version: controller/__init__.py's __version__ is the package version, the chart's version and
appVersion, and the kustomization's image tag (`make set-version VERSION=x.y.z` changes them together)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

import controller

ROOT = Path(__file__).resolve().parents[2]


def test_package_version_comes_from_the_controller_package_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "controller.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", controller.__version__)


def test_chart_and_kustomization_carry_the_same_version() -> None:
    chart = yaml.safe_load((ROOT / "charts/stablelb/Chart.yaml").read_text())
    kustomization = yaml.safe_load((ROOT / "manifests/kustomization.yaml").read_text())
    [image] = kustomization["images"]
    assert (chart["version"], chart["appVersion"], str(image["newTag"])) == (controller.__version__,) * 3
    assert image["name"] == "stablelb-controller"
    chart_values = yaml.safe_load((ROOT / "charts/stablelb/values.yaml").read_text())
    assert chart_values["image"]["repository"] == image["newName"]
    assert chart_values["image"]["tag"] == ""  # the chart's appVersion


def test_dockerfile_names_no_version_and_pins_its_base_by_digest() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert controller.__version__ not in dockerfile
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    name, _, digest = base.partition("@")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert f"# {name}," in dockerfile  # the comment naming the tag
    for label in ("source", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in dockerfile


def test_license_file_is_the_license_the_package_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_make_set_version_changes_every_copy(tmp_path: Path) -> None:
    copies = ["controller/__init__.py", "charts/stablelb/Chart.yaml", "manifests/kustomization.yaml"]
    for name in ["Makefile", *copies]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run(["make", "-s", "-C", str(tmp_path), "set-version", "VERSION=9.8.7"], check=True)

    assert '__version__ = "9.8.7"' in (tmp_path / "controller/__init__.py").read_text()
    chart = yaml.safe_load((tmp_path / "charts/stablelb/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == ("9.8.7", "9.8.7")
    [image] = yaml.safe_load((tmp_path / "manifests/kustomization.yaml").read_text())["images"]
    assert str(image["newTag"]) == "9.8.7"


def test_dockerfile_installs_through_the_script_the_install_test_runs() -> None:
    # tests/packaging/test_image_install.py runs image/install.sh's two steps; the image must use the same.
    dockerfile = (ROOT / "Dockerfile").read_text()
    run = re.search(r"^RUN sh image/install.sh wheel /src /dist \\\n \&\& sh image/install.sh venv "
                    r"/opt/stablelb /src /dist$", dockerfile, re.M)  # fmt: skip
    assert run, "the build stage must install with image/install.sh wheel + venv"
    assert "COPY --from=build /opt/stablelb /opt/stablelb" in dockerfile
    assert "pip uninstall --yes --quiet pip setuptools wheel" in dockerfile


def _defaults(path: str, pattern: str) -> list[str]:
    return re.findall(pattern, (ROOT / path).read_text(), re.M)


def test_every_place_names_the_same_supported_kubernetes_range() -> None:
    # The newest three minors: the Makefile's matrix, the build script's and the harness's defaults, the
    # README, the chart and the kind workflow must move together when a new minor is released.
    oldest, newest = _defaults("Makefile", r"^K8S_(?:OLDEST|NEWEST)_VERSION \?= (v1\.\d+\.\d+)$")
    assert _defaults("e2e/controlplane/build-binaries.sh", r'K8S(?:_OLDEST)?_VERSION:-(v1\.\d+\.\d+)') == [
        newest,
        oldest,
    ]
    assert _defaults("e2e/harness/binaries.py", r'"STABLELB_K8S(?:_OLDEST)?_VERSION", "(v1\.\d+\.\d+)"') == [
        newest,
        oldest,
    ]
    low, high = (int(v.split(".")[1]) for v in (oldest, newest))
    assert high - low == 2
    minors = [f"1.{m}" for m in range(low, high + 1)]
    readme = (ROOT / "README.md").read_text()
    assert f"**Supported Kubernetes: {', '.join(minors)}**" in readme
    assert f"through real {oldest} and {newest}" in readme
    chart_readme = (ROOT / "charts/stablelb/README.md").read_text()
    assert f"Supported Kubernetes: {minors[0]}\N{EN DASH}{minors[-1]}." in chart_readme
    assert f'kubeVersion: ">={minors[0]}.0-0"' in (ROOT / "charts/stablelb/Chart.yaml").read_text()
    kind = _defaults(".github/workflows/e2e-kind.yaml", r'"kindest/node:v(1\.\d+)\.\d+"')
    assert kind == [minors[0], minors[-1]]
