from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from controller.config import (
    ConfigError,
    Settings,
    format_duration,
    parse_args,
    parse_bool,
    parse_duration,
    parse_host_port,
)

SUFFIX = r"_[0-9a-f]{12}"


def parse_error(
    capsys: pytest.CaptureFixture[str], argv: Sequence[str], env: Mapping[str, str] | None = None
) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, {} if env is None else env)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: "), err
    return err


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


# --- defaults, env, precedence ---------------------------------------------------------------------------


def test_defaults_without_flags_or_env() -> None:
    s = parse_args([], {})
    assert s.kubeconfig is None
    assert s.lb_class == "stablelb.io/lb"
    assert s.handle_unclassed is True
    assert s.orphaned_ips == "retain"
    assert s.reclaim_window == 600.0
    assert s.lease_namespace == "kube-system"
    assert s.lease_name == "stablelb-controller"
    assert re.fullmatch(re.escape(socket.gethostname()) + SUFFIX, s.identity), s.identity
    assert s.leader_elect is True
    assert s.workers == 4
    assert s.metrics_bind_address == ":8080"
    assert s.health_probe_bind_address == ":8081"
    assert s.deprecations == ()
    assert s.log_level == "info"
    assert s.log_format == "json"
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (15.0, 10.0, 2.0)


def test_dataclass_defaults_match_parser_defaults() -> None:
    parsed = parse_args([], {})
    direct = Settings()
    assert dataclasses.replace(parsed, identity="x") == dataclasses.replace(direct, identity="x")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.workers = 8  # type: ignore[misc]


def test_every_flag_in_equals_and_space_forms(kubeconfig: Path) -> None:
    s = parse_args(
        [
            f"--kubeconfig={kubeconfig}",
            "--lb-class=example.com/edge",
            "--handle-unclassed=false",
            "--orphaned-ips=reassign",
            "--reclaim-window=1h30m",
            "--lease-namespace",
            "stablelb-system",
            "--lease-name=my-lease",
            "--identity=replica-a",
            "--leader-elect=true",
            "--leader-elect-lease-duration=30s",
            "--leader-elect-renew-deadline=20s",
            "--leader-elect-retry-period=500ms",
            "--workers",
            "8",
            "--metrics-bind-address=127.0.0.1:9090",
            "--health-probe-bind-address",
            "[::1]:9091",
            "--log-level=debug",
            "--log-format=text",
        ],
        {},
    )
    assert s == Settings(
        kubeconfig=str(kubeconfig),
        lb_class="example.com/edge",
        handle_unclassed=False,
        orphaned_ips="reassign",
        reclaim_window=5400.0,
        lease_namespace="stablelb-system",
        lease_name="my-lease",
        identity="replica-a",
        leader_elect=True,
        workers=8,
        metrics_bind_address="127.0.0.1:9090",
        health_probe_bind_address="[::1]:9091",
        log_level="debug",
        log_format="text",
        lease_duration=30.0,
        renew_deadline=20.0,
        retry_period=0.5,
    )


def test_env_fallbacks(kubeconfig: Path) -> None:
    env = {"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": "lb-system", "POD_NAME": "stablelb-7d9f-abcde"}
    s = parse_args([], env)
    assert s.kubeconfig == str(kubeconfig)
    assert s.lease_namespace == "lb-system"
    assert re.fullmatch(r"stablelb-7d9f-abcde" + SUFFIX, s.identity), s.identity


def test_identity_suffix_differs_per_process() -> None:
    env = {"POD_NAME": "pod"}
    assert parse_args([], env).identity != parse_args([], env).identity


def test_flags_take_precedence_over_env(kubeconfig: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("")
    env = {"KUBECONFIG": str(other), "POD_NAMESPACE": "from-env", "POD_NAME": "from-env"}
    s = parse_args([f"--kubeconfig={kubeconfig}", "--lease-namespace=from-flag", "--identity=from-flag"], env)
    assert s.kubeconfig == str(kubeconfig)
    assert s.lease_namespace == "from-flag"
    assert s.identity == "from-flag"


def test_empty_env_values_count_as_unset() -> None:
    s = parse_args([], {"KUBECONFIG": "", "POD_NAMESPACE": "", "POD_NAME": ""})
    assert s.kubeconfig is None
    assert s.lease_namespace == "kube-system"
    assert s.identity.startswith(socket.gethostname() + "_")


def test_kubeconfig_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "kc").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_args(["--kubeconfig=~/kc"], {}).kubeconfig == str(tmp_path / "kc")


# --- booleans --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], True),
        (["--leader-elect"], True),
        (["--leader-elect=true"], True),
        (["--leader-elect=True"], True),
        (["--leader-elect=1"], True),
        (["--leader-elect=false"], False),
        (["--leader-elect=FALSE"], False),
        (["--leader-elect=0"], False),
        (["--leader-elect", "false"], False),
        (["--leader-elect", "--workers=2"], True),
    ],
)
def test_leader_elect_boolean_forms(argv: list[str], expected: bool) -> None:
    assert parse_args(argv, {}).leader_elect is expected


def test_handle_unclassed_boolean() -> None:
    assert parse_args(["--handle-unclassed=false"], {}).handle_unclassed is False
    assert parse_args(["--handle-unclassed"], {}).handle_unclassed is True


def test_invalid_boolean(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, ["--leader-elect=maybe"])
    assert "argument --leader-elect: invalid boolean 'maybe': use true or false" in err


def test_parse_bool_values() -> None:
    for text in ("1", "t", "T", "true", "TRUE", "True", "yes", "on"):
        assert parse_bool(text) is True
    for text in ("0", "f", "F", "false", "FALSE", "False", "no", "off"):
        assert parse_bool(text) is False
    with pytest.raises(ConfigError, match="use true or false"):
        parse_bool("")


# --- durations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h0m30s", 3630.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("500ms", 0.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("2m30.5s", 150.5),
        ("+5s", 5.0),
        ("600", 600.0),
        ("2.5", 2.5),
        (" 10m ", 600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "m", "1h30", "s10", "10 m", "1.2.3s", "ten minutes"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"duration"):
        parse_duration(text)


def test_parse_duration_rejects_negative() -> None:
    with pytest.raises(ConfigError, match="negative duration '-5s': use a value of 0s or more"):
        parse_duration("-5s")


def test_duration_flag_errors(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, ["--reclaim-window=10x"])
    assert "argument --reclaim-window: invalid duration '10x'" in err
    assert "for example 30s, 10m or 1h30m" in err
    err = parse_error(capsys, ["--reclaim-window=-1m"])
    assert "argument --reclaim-window: negative duration '-1m'" in err


def test_reclaim_window_zero_disables() -> None:
    assert parse_args(["--reclaim-window=0"], {}).reclaim_window == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (2, "2s"), (600, "10m"), (5400, "1h30m"), (3630, "1h30s")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# --- addresses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (":8080", (None, 8080)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:9090", ("::", 9090)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_host_port(addr: str, expected: tuple[str | None, int]) -> None:
    assert parse_host_port(addr) == expected


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("8080", "missing port"),
        ("127.0.0.1", "missing port"),
        ("::1:8080", "put an IPv6 host in brackets"),
        ("[::1]8080", "use HOST:PORT"),
        ("[::1", "use HOST:PORT"),
        ("[]:80", "empty IPv6 host"),
        ("host:", "invalid port"),
        ("host:http", "invalid port"),
        ("host:-1", "invalid port"),
        ("host:65536", "use a port between 0 and 65535"),
    ],
)
def test_parse_host_port_rejects(addr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_host_port(addr)


def test_deprecated_http_addr_serves_both_on_one_address_and_says_so() -> None:
    s = parse_args(["--http-addr=[::1]:0"], {})
    assert (s.metrics_bind_address, s.health_probe_bind_address) == ("[::1]:0", "[::1]:0")
    (message,) = s.deprecations
    assert "--http-addr is deprecated" in message
    assert "pass those instead" in message
    s = parse_args(["--http-addr", ":9090"], {})
    assert (s.metrics_bind_address, s.health_probe_bind_address) == (":9090", ":9090")
    # A new flag given as well wins for its own listener.
    s = parse_args(["--http-addr=:9090", "--metrics-bind-address=:9100"], {})
    assert (s.metrics_bind_address, s.health_probe_bind_address) == (":9100", ":9090")
    s = parse_args(["--health-probe-bind-address=:9101", "--http-addr=:9090"], {})
    assert (s.metrics_bind_address, s.health_probe_bind_address) == (":9090", ":9101")
    assert len(s.deprecations) == 1


def test_listener_flags_can_turn_a_listener_off() -> None:
    s = parse_args(["--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0"], {})
    assert (s.metrics_bind_address, s.health_probe_bind_address) == ("0", "127.0.0.1:0")


# --- validation messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lb-class="], "--lb-class must not be empty: use a label-style name such as stablelb.io/lb"),
        (["--lb-class=a/b/c"], "--lb-class 'a/b/c' has more than one '/'"),
        (["--lb-class=Example.COM/lb"], "the prefix must be a lowercase DNS subdomain"),
        (["--lb-class=example.com/-lb"], "the name part must be 1-63 alphanumerics"),
        (["--lb-class=example.com/"], "the name part must be 1-63 alphanumerics"),
        (["--orphaned-ips=drop"], "--orphaned-ips: invalid choice 'drop': use one of retain, reassign"),
        (["--lease-namespace=Kube_System"], "--lease-namespace 'Kube_System' is not a valid namespace name"),
        (["--lease-namespace=" + "a" * 64], "at most 63 characters (or set POD_NAMESPACE)"),
        (["--lease-name=My Lease"], "--lease-name 'My Lease' is not a valid object name"),
        (["--identity= "], "--identity must not be empty: omit it to use $POD_NAME"),
        (["--workers=0"], "--workers must be at least 1, not 0"),
        (["--workers=-3"], "--workers must be at least 1, not -3"),
        (["--workers=four"], "argument --workers: invalid integer 'four': use a whole number such as 4"),
        (["--http-addr=8080"], "--http-addr: invalid address '8080': missing port"),
        (["--http-addr=::1:80"], "--http-addr: invalid address '::1:80': put an IPv6 host in brackets"),
        (["--metrics-bind-address=8080"], "--metrics-bind-address: invalid address '8080': missing port"),
        (["--health-probe-bind-address=::1:80"], "--health-probe-bind-address: invalid address '::1:80'"),
        (["--log-level=verbose"], "argument --log-level: invalid choice 'verbose': use one of debug, info"),
        (["--log-format=xml"], "argument --log-format: invalid choice 'xml': use one of json, text"),
        (["--kubeconfig="], "--kubeconfig is empty: pass a file path, or omit it to use in-cluster config"),
        (["--kubeconfig=/nonexistent/kc"], "file '/nonexistent/kc' (from --kubeconfig) does not exist"),
        (
            ["--leader-elect-lease-duration=10s"],
            "--leader-elect-lease-duration (10s) must be greater than --leader-elect-renew-deadline (10s)",
        ),
        (
            ["--leader-elect-retry-period=9s"],
            "--leader-elect-renew-deadline (10s) must be greater than 1.2 x --leader-elect-retry-period (9s)",
        ),
        (["--leader-elect-retry-period=0s"], "--leader-elect-retry-period must be a positive duration"),
        (["--leader-elect-renew-deadline=0"], "--leader-elect-renew-deadline must be a positive duration"),
        (
            ["--leader-elect-lease-duration=0", "--leader-elect-renew-deadline=0"],
            "--leader-elect-lease-duration must be a positive duration",
        ),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--lease"], "unrecognized arguments: --lease"),  # no silent abbreviations
    ],
)
def test_validation_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    err = parse_error(capsys, argv)
    assert "stablelb-controller: error: " in err
    assert message in err


def test_env_kubeconfig_errors(capsys: pytest.CaptureFixture[str], kubeconfig: Path) -> None:
    err = parse_error(capsys, [], {"KUBECONFIG": "/nonexistent/kc"})
    assert "file '/nonexistent/kc' (from KUBECONFIG) does not exist: fix the path, or unset it" in err
    err = parse_error(capsys, [], {"KUBECONFIG": f"{kubeconfig}:{kubeconfig}"})
    assert "KUBECONFIG lists several files" in err
    assert "pass --kubeconfig=PATH" in err
    # An explicit flag makes a bad KUBECONFIG irrelevant.
    s = parse_args([f"--kubeconfig={kubeconfig}"], {"KUBECONFIG": "/nonexistent"})
    assert s.kubeconfig == str(kubeconfig)


def test_bad_pod_namespace_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, [], {"POD_NAMESPACE": "Bad_NS"})
    assert "--lease-namespace 'Bad_NS' is not a valid namespace name" in err


def test_lease_timings_are_not_checked_without_leader_election() -> None:
    s = parse_args(["--leader-elect=false", "--leader-elect-lease-duration=1s"], {})
    assert s.leader_elect is False
    assert s.lease_duration == 1.0


def test_log_level_aliases_and_case() -> None:
    assert parse_args(["--log-level=WARN"], {}).log_level == "warning"
    assert parse_args(["--log-level=Error"], {}).log_level == "error"
    assert parse_args(["--log-format=TEXT"], {}).log_format == "text"


# --- help ------------------------------------------------------------------------------------------------


def test_help_explains_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"], {})
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for flag, default in [
        ("--kubeconfig", "default: in-cluster service account"),
        ("--lb-class", "default: stablelb.io/lb"),
        ("--handle-unclassed", "default: true"),
        ("--orphaned-ips", "default: retain"),
        ("--reclaim-window", "default: 10m"),
        ("--lease-namespace", "default: kube-system"),
        ("--lease-name", "default: stablelb-controller"),
        ("--identity", "default: hostname plus a random suffix"),
        ("--leader-elect", "default: true"),
        ("--leader-elect-lease-duration", "default: 15s"),
        ("--leader-elect-renew-deadline", "default: 10s"),
        ("--leader-elect-retry-period", "default: 2s"),
        ("--workers", "default: 4"),
        ("--metrics-bind-address", "default: :8080"),
        ("--health-probe-bind-address", "default: :8081"),
        ("--http-addr", "deprecated"),
        ("--log-level", "default: info"),
        ("--log-format", "default: json"),
    ]:
        assert flag in out
        assert default in out, default
    for env in ("KUBECONFIG", "POD_NAMESPACE", "POD_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert env in out


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--version"], {})
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("stablelb-controller ")
