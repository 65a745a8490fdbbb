"""module_utils.diff: what counts as a difference, and what a diff shows."""

from __future__ import annotations

from ansible_collections.virtops.kubevirt.plugins.module_utils.diff import (
    describe_differences,
    hide,
    metadata_patch,
    normalize,
    split_path,
    subset_differences,
)


def test_server_defaults_are_not_differences():
    desired = {"domain": {"devices": {}}}
    live = {"domain": {"devices": {}, "machine": {"type": "q35"}, "firmware": {"uuid": "x"}}}
    assert subset_differences(desired, live, "spec") == []


def test_a_changed_quantity_is_named_by_its_path():
    desired = {"domain": {"resources": {"requests": {"memory": "128Mi"}}}}
    live = {"domain": {"resources": {"requests": {"memory": "64Mi"}}}}
    diffs = subset_differences(desired, live, "spec")
    assert diffs == [("spec.domain.resources.requests.memory", "128Mi", "64Mi")]
    assert describe_differences(diffs) == "spec.domain.resources.requests.memory: wanted '128Mi', live '64Mi'"


def test_list_items_are_compared_in_place_and_by_length():
    desired = {"volumes": [{"name": "a"}, {"name": "b"}]}
    assert subset_differences(desired, {"volumes": [{"name": "a", "x": 1}, {"name": "c"}]}, "spec") == [
        ("spec.volumes[1].name", "b", "c")
    ]
    assert subset_differences(desired, {"volumes": [{"name": "a"}]}, "spec")[0][0] == "spec.volumes"


def test_numbers_equal_their_string_echo():
    assert subset_differences({"cores": 2}, {"cores": "2"}) == []
    assert subset_differences({"on": True}, {"on": "True"}) != []


def test_split_path_keeps_dotted_keys_in_brackets():
    assert split_path("metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]") == [
        "metadata",
        "annotations",
        "kubectl.kubernetes.io/last-applied-configuration",
    ]


def test_normalize_drops_bookkeeping_and_hidden_fields():
    obj = {
        "metadata": {"name": "a", "resourceVersion": "1", "uid": "u", "generation": 2, "managedFields": [],
                     "annotations": {"secret.example.com/x": "s", "keep": "k"}},
        "spec": {},
    }
    out = normalize(obj, ["metadata.annotations[secret.example.com/x]"])
    assert out == {"metadata": {"name": "a", "annotations": {"keep": "k"}}, "spec": {}}
    assert obj["metadata"]["uid"] == "u"  # the input is not modified
    assert hide(obj, ["spec"]) == {"metadata": obj["metadata"]}


def test_metadata_patch_only_carries_what_differs():
    live = {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}
    assert metadata_patch({"labels": {"a": "1"}}, live) is None
    assert metadata_patch({"labels": {"a": "9", "c": "3"}, "annotations": {"x": "y"}}, live) == {
        "metadata": {"labels": {"a": "9", "c": "3"}}
    }
