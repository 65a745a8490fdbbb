"""``virtops-controller``: scheduling, node health and the subresource API.

Every replica serves the subresource API from its start; only the elected leader reconciles (schedules, watches
node health, runs VMs) and registers the APIService. Replicas on every kube-apiserver host, with the same port
and serving CA, let each API server reach one on its own loopback (docs/subresource-api.md, "Several API
servers").
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from virtops.controller.controller import Controller, LeaderElector, ensure_namespace
from virtops.kube import KubeClient

if TYPE_CHECKING:
    from virtops.api.server import SubresourceServer

log = logging.getLogger("virtops.controller")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="virtops-controller", description=__doc__)
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of the controller's identity")
    p.add_argument("--identity", default=f"{socket.gethostname()}-{os.getpid()}", help="leader-election identity")
    p.add_argument("--namespace", default="kubevirt", help="namespace for the leader Lease and the API Service")
    p.add_argument("--lease-namespace", default="kube-node-lease", help="where node agents keep heartbeat Leases")
    p.add_argument("--node-grace-seconds", type=float, default=60.0,
                   help="seconds after a node's lease expired before its VMIs are Failed")
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0, metavar="SECONDS",
                   help="how long a candidate waits, from the last change it saw of the leader Lease, before it "
                        "takes the Lease over (as kube-controller-manager's flag)")
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                   help="a leader that could not renew for this long stops; less than the lease duration")
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="SECONDS",
                   help="how often the leader renews and candidates try")
    p.add_argument("--api-port", type=int, default=0, help="loopback port of the subresource API (0: any free port)")
    p.add_argument("--api-reuse-port", action="store_true",
                   help="bind the API's port with SO_REUSEPORT, so that several replicas on one host (the lab's "
                        "test, a replacement started before the old one stops) share it")
    p.add_argument("--no-api", action="store_true", help="do not serve subresources.kubevirt.io")
    p.add_argument("--state-dir", default=None, help="where the API's serving certificate is written")
    p.add_argument("--tls-cert-file", default=None,
                   help="the API's serving certificate (PEM), valid for <service>.<namespace>.svc; "
                        "without it the controller issues its own from a throw-away CA")
    p.add_argument("--tls-private-key-file", default=None, help="the serving certificate's private key (PEM)")
    p.add_argument("--tls-ca-file", default=None,
                   help="the CA that signed the serving certificate (PEM): the APIService's caBundle")
    p.add_argument("--node-api-client-cert-file", default=None,
                   help="the API's client certificate for the agents' node APIs (PEM; CN virtops-subresource-api)")
    p.add_argument("--node-api-client-key-file", default=None, help="its private key (PEM)")
    p.add_argument("--node-api-ca-file", default=None,
                   help="the CA that signed the agents' node API serving certificates (PEM)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    tls = [args.tls_cert_file, args.tls_private_key_file, args.tls_ca_file]
    if any(tls) and not all(tls):
        p.error("--tls-cert-file, --tls-private-key-file and --tls-ca-file go together")
    node_api = [args.node_api_client_cert_file, args.node_api_client_key_file, args.node_api_ca_file]
    if any(node_api) and not all(node_api):
        p.error("--node-api-client-cert-file, --node-api-client-key-file and --node-api-ca-file go together")
    if not args.leader_elect_lease_duration > args.leader_elect_renew_deadline > 1.2 * args.leader_elect_retry_period:
        p.error("--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline, and that "
                "greater than 1.2 x --leader-elect-retry-period")
    return args


def start_api(client: KubeClient, args: argparse.Namespace, state_dir: Path) -> tuple[SubresourceServer, bytes]:
    """Serve the API (every replica does); returns the server and the CA to publish as the caBundle."""
    from virtops.api.apiservice import serving_certificate
    from virtops.api.nodes import NodeApiCredentials
    from virtops.api.server import SubresourceServer
    from virtops.pki import CertificateAuthority, write_pair

    if args.tls_cert_file:  # given by the operator (the cluster role installs them)
        cert_file, key_file = Path(args.tls_cert_file), Path(args.tls_private_key_file)
        ca_pem = Path(args.tls_ca_file).read_bytes()
    else:  # a throw-away CA of this process: fine for one replica, not for several (each would have its own)
        ca = CertificateAuthority("virtops-subresources-ca")
        ca_pem = ca.cert_pem
        serving = serving_certificate(ca, "virtops-subresources", args.namespace)
        cert_file, key_file = write_pair(state_dir, "api", *serving)
    node_api = None
    if args.node_api_client_cert_file:
        node_api = NodeApiCredentials(args.node_api_client_cert_file, args.node_api_client_key_file,
                                      args.node_api_ca_file)
    else:
        log.warning("no --node-api-client-cert-file: pause and unpause will answer 500 (no way to reach the agents)")
    server = SubresourceServer(client, host="127.0.0.1", port=args.api_port, cert_file=str(cert_file),
                               key_file=str(key_file), node_api=node_api, lease_namespace=args.lease_namespace,
                               reuse_port=args.api_reuse_port)
    server.start()
    log.info("subresources.kubevirt.io served on 127.0.0.1:%s", server.port)
    return server, ca_pem


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = KubeClient.from_kubeconfig(args.kubeconfig, user_agent="virtops-controller")
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="virtops-controller-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signalled = threading.Event()

    def on_signal(*_args: object) -> None:
        signalled.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ensure_namespace(client, args.namespace)
    ensure_namespace(client, args.lease_namespace)
    controller = Controller(client, lease_namespace=args.lease_namespace,
                            node_grace_seconds=args.node_grace_seconds)
    server: SubresourceServer | None = None
    ca_pem = b""
    if not args.no_api:
        server, ca_pem = start_api(client, args, state_dir)

    def on_leader() -> None:
        controller.start()
        if server is not None:
            # The leader alone writes the Service and APIService: replicas never take turns rewriting them.
            from virtops.api.apiservice import register

            register(client, port=server.port, ca_pem=ca_pem, namespace=args.namespace, service="virtops-subresources")
            log.info("the APIService points at port %s", server.port)

    elector = LeaderElector(client, args.identity, namespace=args.namespace,
                            lease_duration=args.leader_elect_lease_duration,
                            renew_deadline=args.leader_elect_renew_deadline,
                            retry_period=args.leader_elect_retry_period)
    elector.run(on_leader, stop)
    stop.wait()
    controller.stop()
    if server is not None:
        server.stop()
    if not signalled.is_set():
        # Leadership lost or not renewed in time: it has stopped acting; campaign again from a clean process
        # (client-go's binaries exit and wait for their service manager; the lab and the role's supervisor
        # fallback have none, and a restart of the one kube-apiserver must not end the only replica).
        log.warning("no longer the leader; starting again as a candidate")
        os.execv(sys.executable, [sys.executable, "-m", "virtops.controller.main", *sys.argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
