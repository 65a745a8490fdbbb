"""The services' client against the real API server: a watch its caller leaves early (an informer stopping, an
event handler failing) does not hand a half-read connection to the next request of the same client."""

from __future__ import annotations

from virtops.kube import KubeClient, path_for


def test_a_watch_left_after_its_first_event_does_not_break_the_next_requests(lab, namespace):
    client = KubeClient.from_kubeconfig(lab.kubeconfig)
    configmaps = path_for("v1", "configmaps", namespace)
    for name in ("first", "second"):
        client.create(configmaps, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                   "data": {"k": name}})
    _items, version = client.list(configmaps, {"fieldSelector": "metadata.name=first"})
    client.merge_patch(path_for("v1", "configmaps", namespace, "first"), {"data": {"k": "changed"}})
    for event in client.watch(configmaps, {"fieldSelector": "metadata.name=first", "resourceVersion": version}, 60):
        assert event["type"] == "MODIFIED"
        break  # the server keeps this stream open for another 60 s
    for _attempt in range(3):  # every pooled connection the client holds
        assert client.get(path_for("v1", "configmaps", namespace, "second"))["data"] == {"k": "second"}
