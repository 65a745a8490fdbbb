"""Leader election: an API server that does not answer for a while is not a lost lease (issue 7's faults
scenario restarts kube-apiserver under the controller); a lease held by another replica, or no renewal for
the lease's whole duration, is."""

from __future__ import annotations

import threading

from virtops.controller.controller import LeaderElector
from virtops.kube import NotFoundError


class FakeLeases:
    """The Lease API at one boundary: a single Lease; while ``down``, every call fails as a refused
    connection does. Each call moves the fake clock on by one second."""

    def __init__(self, stop: threading.Event) -> None:
        self.lease = None
        self.now = 0.0
        self.down_for = 0  # calls that fail from the next one on
        self.down_forever = False
        self.renewals = 0
        self.stop_after_renewals = None
        self.stop = stop

    def clock(self) -> float:
        return self.now

    def _call(self) -> None:
        self.now += 1
        if self.down_forever or self.down_for > 0:
            self.down_for -= 1
            raise ConnectionRefusedError(111, "Connection refused")

    def get(self, path):
        self._call()
        if self.lease is None:
            raise NotFoundError(404, "not found")
        return {"metadata": {"name": "ctl"}, "spec": dict(self.lease)}

    def create(self, path, body):
        self._call()
        self.lease = dict(body["spec"])
        return body

    def update(self, path, body):
        self._call()
        self.lease = dict(body["spec"])
        self.renewals += 1
        if self.stop_after_renewals is not None and self.renewals >= self.stop_after_renewals:
            self.stop.set()
        return body


def elector(fake: FakeLeases, duration: int = 15) -> LeaderElector:
    return LeaderElector(fake, "me", namespace="ns", name="ctl", duration=duration,  # type: ignore[arg-type]
                         retry_period=0, clock=fake.clock)


def test_the_leader_keeps_leading_through_a_short_api_outage():
    stop = threading.Event()
    fake = FakeLeases(stop)
    started = []
    fake.down_for = 3  # not up yet when the controller starts: it campaigns until it is
    fake.stop_after_renewals = 1

    def on_started():
        started.append(fake.now)
        fake.down_for = 10  # then an outage shorter than the lease (15 s)

    elector(fake).run(on_started, stop)

    assert len(started) == 1
    assert fake.renewals == 1  # renewed after the outage; the caller's stop ended it, not the elector
    assert fake.lease["holderIdentity"] == "me"


def test_the_leader_stops_when_it_could_not_renew_for_the_whole_lease():
    stop = threading.Event()
    fake = FakeLeases(stop)

    def on_started():
        fake.down_forever = True

    elector(fake).run(on_started, stop)

    assert stop.is_set()
    assert 15 <= fake.now <= 17  # gave up once the lease could have run out, not before


def test_the_leader_stops_when_another_replica_holds_the_lease():
    stop = threading.Event()
    fake = FakeLeases(stop)

    def on_started():
        fake.lease = dict(fake.lease, holderIdentity="other", renewTime="2999-01-01T00:00:00.000000Z")

    elector(fake).run(on_started, stop)

    assert stop.is_set()
    assert fake.renewals == 0
