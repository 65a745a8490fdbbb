"""``virtops-agent``: the node agent's entry point (arguments, logging, signals, health endpoint)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from virtops.agent import VERSION
from virtops.agent.agent import NodeAgent
from virtops.kube import KubeClient


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--labels wants k=v[,k=v...], not {item!r}")
        labels[key] = value
    return labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virtops-agent", description="Run this host's KubeVirt VMIs with libvirt.")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--state-dir", default="/var/lib/virtops-agent", help="overlays, empty disks, serial logs")
    p.add_argument("--image-store", default="/var/lib/virtops-agent/images",
                   help="containerDisk images as files ('/' and ':' of the reference replaced by '_')")
    p.add_argument("--labels", type=parse_labels, default={}, help="node labels k=v,... for nodeSelector")
    p.add_argument("--cpu", default="1", help="schedulable CPU capacity (a quantity)")
    p.add_argument("--memory", default="1Gi", help="schedulable memory capacity (a quantity)")
    p.add_argument("--lease-namespace", default="kube-node-lease")
    p.add_argument("--libvirt-uri", default="qemu:///system")
    p.add_argument("--heartbeat-seconds", type=float, default=10.0)
    p.add_argument("--lease-duration-seconds", type=int, default=40,
                   help="how long the node counts as alive after a heartbeat (kubelet's default is 40)")
    p.add_argument("--health-port", type=int, default=0, help="serve /healthz on 127.0.0.1:PORT (0: off)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--version", action="version", version=VERSION)
    return p


def serve_health(agent: NodeAgent, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            ok = self.path.rstrip("/") in ("/healthz", "/readyz") and agent.healthy()
            body = b"ok\n" if ok else b"not ready\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet probes
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from virtops.agent.hypervisor import LibvirtHypervisor

    client = KubeClient.from_kubeconfig(args.kubeconfig, user_agent=f"virtops-agent/{VERSION}")
    # As kubelet does, every node carries its name as kubernetes.io/hostname, for nodeSelector.
    labels = {"kubernetes.io/hostname": args.node_name, **args.labels}
    agent = NodeAgent(client, args.node_name, LibvirtHypervisor(args.libvirt_uri), labels=labels,
                      capacity={"cpu": args.cpu, "memory": args.memory}, state_dir=args.state_dir,
                      image_store=args.image_store, lease_namespace=args.lease_namespace,
                      heartbeat_seconds=args.heartbeat_seconds,
                      lease_duration_seconds=args.lease_duration_seconds)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("virtops.agent").info("signal %d: stopping watches; domains keep running", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = serve_health(agent, args.health_port) if args.health_port else None
    agent.run()
    if server is not None:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
