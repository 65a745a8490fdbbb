"""The agent's settings: defaults < YAML file < flags; errors name the key; the JSON log format."""

from __future__ import annotations

import json
import logging

import pytest
from virtops.agent.config import AgentConfig, ConfigError, load_file, parse_address, resolve
from virtops.agent.main import JsonFormatter, build_parser, main, settings_from


def settings(tmp_path, text: str | None, *flags: str) -> AgentConfig:
    argv = list(flags)
    if text is not None:
        path = tmp_path / "agent.yaml"
        path.write_text(text)
        argv.append(f"--config={path}")
    return settings_from(build_parser().parse_args(argv))


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    config = settings(tmp_path, """
kubeconfig: /etc/virtops/agent.kubeconfig
node_name: host-a
labels: {zone: a, disk: hdd}
cpu: 8
heartbeat-seconds: 5
log_format: json
metrics_address: 127.0.0.1:9101
""", "--labels=disk=ssd", "--log-format=text", "--node-name=host-b")
    assert config.kubeconfig == "/etc/virtops/agent.kubeconfig"
    assert config.node_name == "host-b"
    assert config.labels == {"zone": "a", "disk": "ssd"}
    assert config.cpu == "8"  # YAML's number becomes the quantity string
    assert config.heartbeat_seconds == 5
    assert config.log_format == "text"
    assert config.metrics_address == "127.0.0.1:9101"
    assert config.memory == AgentConfig().memory
    assert config.libvirt_events is True


def test_flags_alone_and_the_old_health_port(tmp_path):
    config = settings(tmp_path, None, "--kubeconfig=k", "--node-name=n", "--health-port=8080", "--no-libvirt-events")
    assert (config.metrics_address, config.libvirt_events) == ("127.0.0.1:8080", False)


@pytest.mark.parametrize(("text", "message"), [
    ("node_nmae: x\n", "node_nmae: unknown setting"),
    ("labels: [a]\n", "labels: expected a mapping, got list"),
    ("labels: {a: 1}\n", "labels: keys and values must be strings"),
    ("workers: many\n", "workers: expected an integer, got str"),
    ("workers: true\n", "workers: expected an integer, got a boolean"),
    ("- a\n", "must hold a mapping"),
    ("a: [\n", "is not valid YAML"),
])
def test_bad_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_file(path)


@pytest.mark.parametrize(("settings_", "message"), [
    ({"node_name": "n"}, "kubeconfig: required"),
    ({"kubeconfig": "k"}, "node_name: required"),
    ({"kubeconfig": "k", "node_name": "n", "log_format": "xml"}, "log_format: must be one of text, json"),
    ({"kubeconfig": "k", "node_name": "n", "log_level": "loud"}, "log_level: must be one of"),
    ({"kubeconfig": "k", "node_name": "n", "workers": 0}, "workers: must be a positive number"),
    ({"kubeconfig": "k", "node_name": "n", "metrics_address": "0.0.0.0:9"}, "not a loopback address"),
    ({"kubeconfig": "k", "node_name": "n", "metrics_address": "9100"}, "expected HOST:PORT"),
    # The Lease carries cpu and memory to the scheduler as written: a non-quantity would break it there.
    ({"kubeconfig": "k", "node_name": "n", "cpu": "two"}, "cpu: must be a positive quantity"),
    ({"kubeconfig": "k", "node_name": "n", "memory": "16 GB"}, "memory: must be a positive quantity"),
    ({"kubeconfig": "k", "node_name": "n", "memory": "0"}, "memory: must be a positive quantity"),
    ({"kubeconfig": "k", "node_name": "n", "heartbeat_seconds": float("inf")}, "heartbeat_seconds: must be a pos"),
    ({"kubeconfig": "k", "node_name": "n", "resync_seconds": float("nan")}, "resync_seconds: must be a pos"),
    ({"kubeconfig": "k", "node_name": "n", "heartbeat_seconds": 40}, "heartbeat_seconds: must be less than lease"),
])
def test_invalid_settings_name_the_key(settings_, message):
    with pytest.raises(ConfigError, match=message):
        resolve(settings_, {})


def test_flag_numbers_are_checked_like_the_file_s(tmp_path):
    with pytest.raises(ConfigError, match="heartbeat_seconds: must be a positive number, not inf"):
        settings(tmp_path, None, "--kubeconfig=k", "--node-name=n", "--heartbeat-seconds=inf")
    config = settings(tmp_path, "cpu: 500m\nmemory: 16Gi\n", "--kubeconfig=k", "--node-name=n")
    assert (config.cpu, config.memory) == ("500m", "16Gi")


def test_loopback_addresses():
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("localhost:9100") == ("127.0.0.1", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)


def test_a_missing_file_is_a_usage_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([f"--config={tmp_path / 'nope.yaml'}"])
    assert exc.value.code == 2
    assert "--config: cannot read" in capsys.readouterr().err


def test_json_log_lines():
    record = logging.LogRecord("virtops.agent", logging.WARNING, __file__, 1, "VMI %s failed", ("ns/a",), None)
    entry = json.loads(JsonFormatter("host-a").format(record))
    assert entry["msg"] == "VMI ns/a failed"
    assert (entry["level"], entry["logger"], entry["node"]) == ("warning", "virtops.agent", "host-a")
    assert entry["time"].endswith("+00:00")
