"""Leader election as client-go does it: lease_duration > renew_deadline > retry_period; a candidate judges
expiry from when *it* saw the Lease record change (its monotonic clock), never from the holder's renewTime
against its own wall clock; a leader that cannot renew within renew_deadline stops acting, even while its
request hangs. The API is faked at the client boundary (one Lease); the real one is in
tests/integration/test_controller_leader_flap.py."""

from __future__ import annotations

import copy
import threading
import time

import pytest
from virtops.controller.controller import LeaderElector
from virtops.controller.main import parse_args
from virtops.kube import ConflictError, NotFoundError

FAST = {"lease_duration": 0.6, "renew_deadline": 0.4, "retry_period": 0.05}


class FakeLeases:
    """One Lease with resourceVersion checks. ``hang`` makes every call block until released (a frozen API
    server); ``down`` makes every call fail as a refused connection does."""

    def __init__(self) -> None:
        self.lease: dict | None = None
        self.version = 0
        self.down = False
        self.hang = threading.Event()
        self.release = threading.Event()
        self.puts = 0

    def request(self, method, path, query=None, body=None, timeout=30.0):
        if self.hang.is_set():
            self.release.wait(30)
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        if method == "GET":
            if self.lease is None:
                raise NotFoundError(404, "not found")
            return copy.deepcopy(self.lease)
        if method == "POST" and self.lease is not None:
            raise ConflictError(409, "exists")
        if method == "PUT" and body["metadata"].get("resourceVersion") != str(self.version):
            raise ConflictError(409, "the object has been modified")
        self.version += 1
        self.puts += method == "PUT"
        self.lease = dict(copy.deepcopy(body), metadata=dict(body["metadata"], resourceVersion=str(self.version)))
        return copy.deepcopy(self.lease)

    def hold(self, holder: str, renew_time: str) -> None:
        """Another replica writes the Lease (its clock says renew_time)."""
        self.version += 1
        self.lease = {"metadata": {"name": "ctl", "resourceVersion": str(self.version)},
                      "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1, "renewTime": renew_time}}


def elector(fake, identity="me", **timing) -> LeaderElector:
    return LeaderElector(fake, identity, namespace="ns", name="ctl", **dict(FAST, **timing))  # type: ignore[arg-type]


def lead(fake, identity="me", on_started=None, **timing):
    """Run an elector in a thread; returns (stop event, thread, started event)."""
    stop, started = threading.Event(), threading.Event()

    def begun():
        started.set()
        if on_started:
            on_started()

    thread = threading.Thread(target=elector(fake, identity, **timing).run, args=(begun, stop), daemon=True)
    thread.start()
    return stop, thread, started


def test_the_margins_are_checked():
    with pytest.raises(ValueError, match="lease_duration"):
        LeaderElector(None, "me", lease_duration=10, renew_deadline=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(None, "me", lease_duration=15, renew_deadline=2, retry_period=2)  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        parse_args(["--kubeconfig=k", "--leader-elect-lease-duration=5", "--leader-elect-renew-deadline=10"])


def test_a_holder_whose_clock_is_behind_keeps_its_lease_while_it_renews():
    fake = FakeLeases()
    fake.hold("other", "2001-01-01T00:00:00.000000Z")  # its wall clock is 25 years behind ours
    candidate = elector(fake, "me")
    for beat in range(8):  # ... but it renews: the record changes every time we look
        fake.hold("other", f"2001-01-01T00:00:0{beat}.000000Z")
        assert candidate.try_acquire() is False
        time.sleep(FAST["lease_duration"] / 4)
    assert fake.lease["spec"]["holderIdentity"] == "other"


def test_a_dead_holder_whose_clock_was_ahead_is_taken_over_after_the_lease_duration():
    fake = FakeLeases()
    fake.hold("other", "2999-01-01T00:00:00.000000Z")  # it wrote a far future renewTime, then died
    candidate = elector(fake, "me", lease_duration=1.0, renew_deadline=0.5)
    assert candidate.try_acquire() is False  # first sight of this record: the wait starts now
    attempts = 0
    while not candidate.try_acquire():
        attempts += 1
        assert attempts < 400, "never took over a Lease nobody renews"
        time.sleep(0.01)
    spec = fake.lease["spec"]
    assert spec["holderIdentity"] == "me" and spec["leaseTransitions"] == 1


def test_a_leader_whose_api_server_freezes_stops_acting_within_the_renew_deadline():
    fake = FakeLeases()
    stop, thread, started = lead(fake)
    assert started.wait(5)
    fake.hang.set()  # every request now hangs: no answer, no error
    try:
        assert stop.wait(10), "still acting as leader with no renewal past the renew deadline"
        thread.join(5)
        assert not thread.is_alive()
    finally:
        fake.release.set()


def test_the_leader_keeps_leading_through_an_outage_shorter_than_the_renew_deadline():
    fake = FakeLeases()
    stop, thread, started = lead(fake, lease_duration=3.0, renew_deadline=2.0)
    assert started.wait(5)
    fake.down = True
    time.sleep(0.5)  # refused for a quarter of the renew deadline
    fake.down = False
    renewed = fake.puts
    while fake.puts < renewed + 3:  # it renews again ...
        assert not stop.is_set(), "gave up during a short outage"
        time.sleep(0.02)
    assert not stop.is_set()  # ... and is still the leader
    stop.set()
    thread.join(5)


def test_the_leader_stops_when_another_replica_holds_the_lease():
    fake = FakeLeases()
    stop, thread, started = lead(fake)
    assert started.wait(5)
    fake.hold("other", "2999-01-01T00:00:00.000000Z")
    assert stop.wait(10)
    thread.join(5)
