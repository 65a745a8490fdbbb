"""``virtops-agent``: the node agent's entry point (settings, logging, signals, health and metrics endpoint)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from virtops.agent import VERSION
from virtops.agent.agent import NodeAgent
from virtops.agent.config import AgentConfig, ConfigError, load_file, parse_address, resolve
from virtops.agent.images import ImageCache
from virtops.agent.nodeapi import AgentNodeOps, NodeApiServer
from virtops.kube import KubeClient
from virtops.quantity import parse_quantity

log = logging.getLogger("virtops.agent")


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--labels wants k=v[,k=v...], not {item!r}")
        labels[key] = value
    return labels


def build_parser() -> argparse.ArgumentParser:
    """Every flag defaults to None ("not given"): defaults live in AgentConfig, and the file sits in between."""
    d = AgentConfig()
    p = argparse.ArgumentParser(prog="virtops-agent", description="Run this host's KubeVirt VMIs with libvirt.")
    p.add_argument("--config", help="a YAML file of settings (keys as the flags, with '_'); flags override it")
    p.add_argument("--kubeconfig", help="the agent's own credentials (required here or in the file)")
    p.add_argument("--node-name", help="the node this agent runs (required here or in the file)")
    p.add_argument("--state-dir", help=f"overlays, empty disks, serial logs (default {d.state_dir})")
    p.add_argument("--image-cache", help=f"pulled container images, by digest (default {d.image_cache})")
    p.add_argument("--image-cache-max-bytes",
                   help=f"collect unused images above this size, a quantity (default {d.image_cache_max_bytes})")
    p.add_argument("--registry-ca-dir", help="CA certificates (*.crt) trusted for registries, besides the system's")
    p.add_argument("--registry-auth-file", help="the node's registry credentials (containers-auth.json)")
    p.add_argument("--pull-workers", type=int, help=f"image pulls in parallel (default {d.pull_workers})")
    p.add_argument("--pull-backoff-max-seconds", type=float,
                   help=f"longest wait between tries of a failing pull (default {d.pull_backoff_max_seconds})")
    p.add_argument("--labels", type=parse_labels, help="node labels k=v,... for nodeSelector (added to the file's)")
    p.add_argument("--cpu", help=f"schedulable CPU capacity, a quantity (default {d.cpu})")
    p.add_argument("--memory", help=f"schedulable memory capacity, a quantity (default {d.memory})")
    p.add_argument("--lease-namespace", help=f"namespace of the node's heartbeat Lease (default {d.lease_namespace})")
    p.add_argument("--libvirt-uri", help=f"default {d.libvirt_uri}")
    p.add_argument("--heartbeat-seconds", type=float, help=f"Lease renewal interval (default {d.heartbeat_seconds})")
    p.add_argument("--lease-duration-seconds", type=int,
                   help="how long the node counts as alive after a heartbeat (kubelet's default is 40)")
    p.add_argument("--resync-seconds", type=float,
                   help=f"look at every VMI this often, besides watch and libvirt events (default {d.resync_seconds})")
    p.add_argument("--workers", type=int, help=f"VMIs reconciled in parallel (default {d.workers})")
    p.add_argument("--watch-timeout-seconds", type=int, help=f"length of one watch request (default "
                                                             f"{d.watch_timeout_seconds})")
    p.add_argument("--libvirt-events", action=argparse.BooleanOptionalAction,
                   help="follow libvirt's domain lifecycle events (default on)")
    p.add_argument("--metrics-address", help="serve /healthz, /readyz and /metrics on this loopback HOST:PORT")
    p.add_argument("--health-port", type=int, help="old spelling of --metrics-address 127.0.0.1:PORT")
    p.add_argument("--node-api-address",
                   help="serve the node API (pause, unpause for the subresource API) on this loopback HOST:PORT")
    p.add_argument("--node-api-tls-cert-file", help="the node API's serving certificate (PEM), naming this node")
    p.add_argument("--node-api-tls-key-file", help="its private key (PEM)")
    p.add_argument("--node-api-client-ca-file", help="the CA that signed the subresource API's client certificate")
    p.add_argument("--node-api-client-name",
                   help=f"the only client CN the node API accepts (default {d.node_api_client_name})")
    p.add_argument("--log-format", choices=("text", "json"), help="default text")
    p.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    p.add_argument("--version", action="version", version=VERSION)
    return p


def settings_from(args: argparse.Namespace) -> AgentConfig:
    file_settings = load_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k in AgentConfig.keys()}
    if args.health_port is not None and args.metrics_address is None:
        flags["metrics_address"] = f"127.0.0.1:{args.health_port}" if args.health_port else ""
    return resolve(file_settings, flags)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg (and the exception, if any)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "node": self.node,
            "msg": record.getMessage(), "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def setup_logging(config: AgentConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter(config.node_name))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve_http(agent: NodeAgent, address: str) -> ThreadingHTTPServer:
    """/healthz (alive: heartbeats land), /readyz (and the VMI list is synced), /metrics (Prometheus text)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0].rstrip("/")
            content_type = "text/plain; charset=utf-8"
            if path == "/metrics":
                code, body = 200, agent.metrics.render().encode()
                content_type = "text/plain; version=0.0.4; charset=utf-8"
            elif path in ("/healthz", "/readyz"):
                ok = agent.healthy()
                code, body = (200, b"ok\n") if ok else (503, b"not ready\n")
            else:
                code, body = 404, b"not found\n"
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet probes
            pass

    host, port = parse_address(address)
    server_class = _HTTPServer6 if ":" in host else ThreadingHTTPServer  # "::1" is documented, and allowed
    server = server_class((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    host, port = server.server_address[:2]
    log.info("serving /healthz, /readyz and /metrics on http://%s:%d", host, port)
    return server


def start_node_api(agent: NodeAgent, config: AgentConfig) -> NodeApiServer:
    """The node API, started before the first heartbeat so that the Lease names its address at once."""
    host, port = parse_address(config.node_api_address, "node_api_address")
    server = NodeApiServer(AgentNodeOps(agent), host=host, port=port, cert_file=config.node_api_tls_cert_file,
                           key_file=config.node_api_tls_key_file, client_ca_file=config.node_api_client_ca_file,
                           client_name=config.node_api_client_name)
    server.start()
    agent.node_api_url = server.url
    return server


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = settings_from(args)
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging(config)
    # The effective settings, once (paths and numbers only: the credentials stay in the kubeconfig file).
    log.info("settings: %s", json.dumps(dataclasses.asdict(config), sort_keys=True))
    from virtops.agent.hypervisor import LibvirtHypervisor
    from virtops.agent.libvirt_events import DomainEventWatcher, ensure_event_loop

    events = None
    if config.libvirt_events:
        ensure_event_loop()  # before any libvirt connection: then every connection has keepalive
        events = DomainEventWatcher(config.libvirt_uri)
    client = KubeClient.from_kubeconfig(config.kubeconfig, user_agent=f"virtops-agent/{VERSION}")
    # As kubelet does, every node carries its name as kubernetes.io/hostname, for nodeSelector.
    labels = {"kubernetes.io/hostname": config.node_name, **config.labels}
    hypervisor = LibvirtHypervisor(config.libvirt_uri)
    agent = NodeAgent(client, config.node_name, hypervisor, labels=labels,
                      capacity={"cpu": config.cpu, "memory": config.memory}, state_dir=config.state_dir,
                      image_cache=ImageCache(config.image_cache, ca_dir=config.registry_ca_dir,
                                             auth_file=config.registry_auth_file,
                                             max_bytes=int(parse_quantity(config.image_cache_max_bytes))),
                      pull_workers=config.pull_workers, pull_backoff_max_seconds=config.pull_backoff_max_seconds,
                      lease_namespace=config.lease_namespace,
                      heartbeat_seconds=config.heartbeat_seconds,
                      lease_duration_seconds=config.lease_duration_seconds, resync_seconds=config.resync_seconds,
                      workers=config.workers, watch_timeout_seconds=config.watch_timeout_seconds,
                      domain_events=events)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping watches; domains keep running", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = serve_http(agent, config.metrics_address) if config.metrics_address else None
    node_api = start_node_api(agent, config) if config.node_api_address else None
    agent.run()
    if node_api is not None:
        node_api.stop()
    if server is not None:
        server.shutdown()
        server.server_close()
    hypervisor.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
