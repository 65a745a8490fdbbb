"""Two controller replicas campaign for one Lease on the real lab while its API server flaps: first it freezes
(SIGSTOP: requests hang, nothing answers, for longer than the lease), then it restarts. Never two leaders act
at once, and no leader acts longer than the lease after its last successful renewal.

A replica that loses leadership stops, and comes back as a new candidate (its service manager restarts it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

from conftest import wait_until
from virtops.controller.controller import LeaderElector, ensure_namespace
from virtops.kube import KubeClient, NotFoundError

TIMING = {"lease_duration": 5.0, "renew_deadline": 3.0, "retry_period": 0.5}


class RecordingClient(KubeClient):
    """The real client, noting (by the monotonic clock) when a write of the leader Lease succeeded."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.written: list[float] = []

    def request(self, method, path, query=None, body=None, *args, **kwargs):
        answer = super().request(method, path, query, body, *args, **kwargs)
        if method in ("PUT", "POST") and "/leases" in path:
            self.written.append(time.monotonic())
        return answer


class Replica:
    """One controller replica: campaigns, 'acts' while leader, and campaigns again after it stopped."""

    def __init__(self, name: str, kubeconfig: str, namespace: str, over: threading.Event) -> None:
        self.name, self.kubeconfig, self.namespace, self.over = name, kubeconfig, namespace, over
        self.terms: list[tuple[float, float, list[float]]] = []  # (began acting, stopped acting, lease writes)
        self.thread = threading.Thread(target=self._live, daemon=True)

    def _live(self) -> None:
        run = 0
        while not self.over.is_set():
            run += 1
            self._run(f"{self.name}-{run}")

    def _run(self, identity: str) -> None:
        client = RecordingClient.from_kubeconfig(self.kubeconfig)
        stop, began = threading.Event(), []
        elector = LeaderElector(client, identity, namespace=self.namespace, name="ctl", **TIMING)
        threading.Thread(target=lambda: (self.over.wait(), stop.set()), daemon=True).start()
        elector.run(lambda: began.append(time.monotonic()), stop)  # returns once it stopped acting
        if began:
            self.terms.append((began[0], time.monotonic(), list(client.written)))


def test_never_two_leaders_through_a_frozen_and_a_restarted_api_server(lab):
    from virtops.lab import ControlPlane

    plane = ControlPlane(lab.name, lab.state_dir)
    client = KubeClient.from_kubeconfig(lab.kubeconfig)
    namespace = f"leader-{uuid.uuid4().hex[:6]}"
    ensure_namespace(client, namespace)
    over = threading.Event()
    replicas = [Replica(name, lab.kubeconfig, namespace, over) for name in ("a", "b")]

    def holder() -> str:
        try:
            return client.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/ctl")["spec"][
                "holderIdentity"]
        except NotFoundError:
            return ""
    try:
        replicas[0].thread.start()
        wait_until(lambda: holder().startswith("a-"), attempts=200, delay=0.1)
        replicas[1].thread.start()
        time.sleep(2 * TIMING["retry_period"])  # b has seen the record and campaigns

        apiserver = plane.status().pids["kube-apiserver"]["pid"]
        os.kill(apiserver, signal.SIGSTOP)  # frozen: every request hangs
        try:
            time.sleep(TIMING["lease_duration"] + 2)
        finally:
            os.kill(apiserver, signal.SIGCONT)
        wait_until(holder, attempts=300, delay=0.1)
        time.sleep(TIMING["lease_duration"])  # settle: someone leads again

        plane.restart("kube-apiserver", while_down=lambda: time.sleep(TIMING["renew_deadline"]))
        wait_until(holder, attempts=300, delay=0.1)
        time.sleep(TIMING["lease_duration"] + 2 * TIMING["retry_period"])
    finally:
        over.set()
        for replica in replicas:
            if replica.thread.is_alive():
                replica.thread.join(30)

    terms = sorted((began, ended, writes, r.name) for r in replicas for began, ended, writes in r.terms)
    assert len(terms) >= 2, f"leadership never changed hands or nobody led: {terms}"
    for (_b1, end1, _w1, who1), (begin2, _e2, _w2, who2) in zip(terms, terms[1:], strict=False):
        assert begin2 >= end1, f"{who2} began acting {end1 - begin2:.2f}s before {who1} stopped"
    for began, ended, writes, who in terms:
        # From the write that won the Lease to the moment it stopped acting, every instant is less than a
        # lease after one of its successful writes: no candidate can have counted the lease out meanwhile.
        acquired = max(w for w in writes if w <= began)
        marks = sorted({w for w in writes if acquired <= w <= ended} | {ended})
        gap = max(b - a for a, b in zip(marks, marks[1:], strict=False))
        assert gap < TIMING["lease_duration"], f"{who} acted {gap:.1f}s past a renewal, longer than the lease"
