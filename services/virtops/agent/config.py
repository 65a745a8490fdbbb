"""The agent's settings: defaults, then a YAML file (``--config``), then command-line flags.

Every key of the file has a flag of the same name (``node_name`` is ``--node-name``); docs/node-agent.md
lists them all. An unknown key or a value of the wrong type is an error that names the key.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from virtops.agent.domain import parse_quantity

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """The configuration is unusable; the message names the key (or flag) at fault."""


@dataclass
class AgentConfig:
    kubeconfig: str = ""
    node_name: str = ""
    state_dir: str = "/var/lib/virtops-agent"
    image_cache: str = "/var/lib/virtops-agent/images"
    image_cache_max_bytes: str = "20Gi"
    registry_ca_dir: str = ""
    registry_auth_file: str = ""
    pull_workers: int = 2
    pull_backoff_max_seconds: float = 60.0
    labels: dict[str, str] = field(default_factory=dict)
    cpu: str = "1"
    memory: str = "1Gi"
    lease_namespace: str = "kube-node-lease"
    libvirt_uri: str = "qemu:///system"
    heartbeat_seconds: float = 10.0
    lease_duration_seconds: int = 40
    resync_seconds: float = 30.0
    workers: int = 4
    watch_timeout_seconds: int = 300
    libvirt_events: bool = True
    metrics_address: str = ""
    # The node API (nodeapi.py): off unless an address is given; then the three files are required.
    node_api_address: str = ""
    node_api_tls_cert_file: str = ""
    node_api_tls_key_file: str = ""
    node_api_client_ca_file: str = ""
    node_api_client_name: str = "virtops-subresource-api"
    log_format: str = "text"
    log_level: str = "INFO"

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


_TYPES: dict[str, type | tuple[type, ...]] = {
    "labels": dict, "heartbeat_seconds": (int, float), "resync_seconds": (int, float), "lease_duration_seconds": int,
    "workers": int, "watch_timeout_seconds": int, "libvirt_events": bool, "pull_workers": int,
    "pull_backoff_max_seconds": (int, float),
}


def _check_type(key: str, value: Any) -> Any:
    wanted = _TYPES.get(key, str)
    if isinstance(value, bool) and wanted is not bool:
        raise ConfigError(f"{key}: expected {_type_name(wanted)}, got a boolean")
    if wanted is str and isinstance(value, (int, float)) and key in ("cpu", "memory", "image_cache_max_bytes"):
        return str(value)  # YAML reads `cpu: 2` as a number; a quantity is a string
    if not isinstance(value, wanted):
        raise ConfigError(f"{key}: expected {_type_name(wanted)}, got {type(value).__name__}")
    if key == "labels":
        bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ConfigError(f"labels: keys and values must be strings (see {bad[0]!r})")
    return value


def _type_name(wanted: type | tuple[type, ...]) -> str:
    if isinstance(wanted, tuple):
        return " or ".join(t.__name__ for t in wanted)
    return {"str": "a string", "dict": "a mapping", "int": "an integer", "bool": "a boolean"}.get(
        wanted.__name__, wanted.__name__)


def load_file(path: str | Path) -> dict[str, Any]:
    """The file's settings, checked; keys may be written with '-' or '_'."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of settings")
    known = set(AgentConfig.keys())
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{key}: unknown setting in {path} (known: {', '.join(sorted(known))})")
        settings[name] = _check_type(name, value)
    return settings


def resolve(file_settings: dict[str, Any], flag_settings: dict[str, Any]) -> AgentConfig:
    """Defaults, overridden by the file, overridden by the flags that were given (not None)."""
    config = AgentConfig()
    for source in (file_settings, {k: v for k, v in flag_settings.items() if v is not None}):
        for key, value in source.items():
            if key == "labels":
                config.labels = {**config.labels, **value}  # flags add to (and override) the file's labels
            else:
                setattr(config, key, value)
    validate(config)
    return config


def validate(config: AgentConfig) -> None:
    for key in ("kubeconfig", "node_name"):
        if not getattr(config, key):
            raise ConfigError(f"{key}: required (--{key.replace('_', '-')} or the config file)")
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format: must be one of {', '.join(LOG_FORMATS)}, not {config.log_format!r}")
    config.log_level = config.log_level.upper()
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}, not {config.log_level!r}")
    for key in ("heartbeat_seconds", "resync_seconds", "lease_duration_seconds", "workers", "watch_timeout_seconds",
                "pull_workers", "pull_backoff_max_seconds"):
        value = getattr(config, key)
        if not math.isfinite(value) or value <= 0:  # YAML's .inf/.nan and the flag "inf" parse as floats
            raise ConfigError(f"{key}: must be a positive number, not {value!r}")
    if config.heartbeat_seconds >= config.lease_duration_seconds:
        # Renewed less often than it expires, the Lease lapses between heartbeats: the node looks dead.
        raise ConfigError(f"heartbeat_seconds: must be less than lease_duration_seconds "
                          f"({config.heartbeat_seconds!r} >= {config.lease_duration_seconds!r})")
    for key in ("cpu", "memory", "image_cache_max_bytes"):
        # Published on the Lease as is: the controller's scheduler parses it there.
        try:
            amount = parse_quantity(getattr(config, key))
        except ValueError:
            amount = None
        if amount is None or amount <= 0:
            raise ConfigError(f"{key}: must be a positive quantity (like 2, 500m, 16Gi), "
                              f"not {getattr(config, key)!r}")
    if config.metrics_address:
        parse_address(config.metrics_address)
    if config.node_api_address:
        parse_address(config.node_api_address, "node_api_address")
        for key in ("node_api_tls_cert_file", "node_api_tls_key_file", "node_api_client_ca_file"):
            if not getattr(config, key):
                raise ConfigError(f"{key}: required with node_api_address (the node API is mutual TLS only)")
        if not config.node_api_client_name:
            raise ConfigError("node_api_client_name: must name the subresource API's client certificate (its CN)")


def parse_address(text: str, key: str = "metrics_address") -> tuple[str, int]:
    """``HOST:PORT`` on a loopback address (the agent never listens elsewhere); port 0 picks a free one."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, not {text!r}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(f"{key}: {host!r} is not a loopback address (use 127.0.0.1)")
    return ("127.0.0.1" if host == "localhost" else host), int(port_text)
