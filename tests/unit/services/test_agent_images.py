"""The node's image rules (services/virtops/agent/images.py): KubeVirt's pull policy defaults, what a user
reads of skopeo's errors, and the cache's garbage collection bound."""

from __future__ import annotations

import json
import os

import pytest
from virtops.agent.images import ImageCache, _repository, default_pull_policy, skopeo_reason, wait_seconds


@pytest.mark.parametrize("image, policy", [
    ("registry:5000/virtops/debian:12", "IfNotPresent"),
    ("registry:5000/virtops/debian:latest", "Always"),
    ("registry:5000/virtops/debian", "Always"),  # the port is not a tag
    ("quay.io/containerdisks/fedora", "Always"),
    ("quay.io/containerdisks/fedora@sha256:" + "a" * 64, "IfNotPresent"),
])
def test_pull_policy_defaults_as_kubevirt(image, policy):
    assert default_pull_policy(image) == policy


def test_repository_drops_the_tag_or_digest_but_keeps_the_port():
    assert _repository("127.0.0.1:5000/a/b:1") == "127.0.0.1:5000/a/b"
    assert _repository("127.0.0.1:5000/a/b") == "127.0.0.1:5000/a/b"
    assert _repository("127.0.0.1:5000/a/b@sha256:ab") == "127.0.0.1:5000/a/b"


def test_skopeo_reason_is_the_registrys_reason_without_the_log_prefix():
    stderr = ('time="2026-12-01T22:53:57Z" level=fatal msg="Error parsing image name \\"docker://127.0.0.1:1/x:1'
              '\\": reading manifest 1 in 127.0.0.1:1/x: manifest unknown: manifest unknown"\n')
    assert skopeo_reason(stderr) == "manifest unknown: manifest unknown"
    assert skopeo_reason("plain failure\n") == "plain failure"


def test_backoff_doubles_up_to_the_cap():
    assert [wait_seconds(n, 5) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def entry(cache: ImageCache, digest: str, size: int, age: int) -> None:
    path = cache.root / "sha256" / digest
    (path / "rootfs").mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"digest": f"sha256:{digest}", "size": size}))
    os.utime(path / "meta.json", (1_000_000 + age, 1_000_000 + age))


def test_collect_removes_unused_images_oldest_first_down_to_the_bound(tmp_path):
    cache = ImageCache(tmp_path, max_bytes=250)
    entry(cache, "old", 100, 1)
    entry(cache, "used", 100, 0)
    entry(cache, "mid", 100, 2)
    entry(cache, "new", 100, 3)
    removed = cache.collect({"sha256:used"})
    assert removed == ["sha256:old", "sha256:mid"]  # "used" is older but in use; 200 bytes remain
    assert sorted(p.name for p in cache.entries()) == ["new", "used"]
    assert cache.collect({"sha256:used"}) == []  # within the bound: nothing more goes
