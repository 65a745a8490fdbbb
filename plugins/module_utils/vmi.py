# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""VirtualMachineInstance desired state: definition, summary, and the present/absent service."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import time

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the module
    yaml = None

from ansible_collections.virtops.kubevirt.plugins.module_utils.client import resource_path
from ansible_collections.virtops.kubevirt.plugins.module_utils.diff import (
    describe_differences,
    hide,
    metadata_patch,
    normalize,
    subset_differences,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    ApiError,
    ConflictError,
    DefinitionError,
    KubeVirtOpsError,
    NotFoundError,
    WaitTimeoutError,
    failure_message,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import (
    Expectation,
    describe_last_seen,
    find_condition,
    recent_events,
    wait_for_object,
)

GROUP = "kubevirt.io"
KIND = "VirtualMachineInstance"
PLURAL = "virtualmachineinstances"
API_VERSIONS = ("kubevirt.io/v1", "kubevirt.io/v1alpha3")
DEFAULT_API_VERSION = "kubevirt.io/v1"
# A service's ``live`` argument when the caller has not read the object: the service GETs it.
UNREAD = object()


def collection_path(namespace=None, api_version=DEFAULT_API_VERSION):
    return resource_path(api_version, PLURAL, namespace)


def object_path(namespace, name, api_version=DEFAULT_API_VERSION):
    return resource_path(api_version, PLURAL, namespace, name)


def summarize(obj):
    """The short summary every module returns: what `kubectl get vmis` shows, and paused."""
    if not obj:
        return {}
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    interfaces = status.get("interfaces") or []
    ready = find_condition(obj, "Ready")
    paused = find_condition(obj, "Paused")
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "phase": status.get("phase") or "",
        "node": status.get("nodeName") or "",
        "ip": (interfaces[0].get("ipAddress") if interfaces else None) or "",
        "ready": bool(ready and ready.get("status") == "True"),
        "paused": bool(paused and paused.get("status") == "True"),
    }


class Kind:
    """A KubeVirt kind the modules manage: its names and the API versions it is served at."""

    def __init__(self, kind, plural, api_versions, result_key):
        self.kind = kind
        self.plural = plural
        self.api_versions = api_versions
        self.default_api_version = api_versions[0]
        self.result_key = result_key  # the key of the object in a module result: vmi, vm

    def collection_path(self, namespace=None, api_version=None):
        return resource_path(api_version or self.default_api_version, self.plural, namespace)

    def object_path(self, namespace, name, api_version=None, subresource=None):
        return resource_path(api_version or self.default_api_version, self.plural, namespace, name, subresource)


VMI = Kind(KIND, PLURAL, API_VERSIONS, "vmi")


def _load_yaml(text, field):
    """The non-empty documents of a YAML text, each a mapping."""
    if yaml is None:
        raise KubeVirtOpsError("PyYAML is required to parse {0}".format(field))
    try:
        # The C loader when PyYAML has it: a batch file of many objects parses several times faster.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        raise DefinitionError("{0}: not valid YAML: {1}".format(field, exc))
    if not docs:
        raise DefinitionError("{0}: no YAML document in it".format(field))
    return docs


def _raw_documents(definition, src):
    """(field name, document) pairs from definition (dict, list or YAML text) or src (a file)."""
    if isinstance(definition, str):
        docs, field = _load_yaml(definition, "definition"), "definition"
    elif isinstance(definition, dict):
        docs, field = [copy.deepcopy(definition)], "definition"
    elif isinstance(definition, list):
        docs, field = copy.deepcopy(definition), "definition"
        if not docs:
            raise DefinitionError("definition: the list is empty")
    elif definition is not None:
        raise DefinitionError("definition: expected a dict, a list of dicts or YAML text")
    elif src:
        try:
            with open(src) as f:
                text = f.read()
        except (IOError, OSError) as exc:
            raise DefinitionError("src: cannot read {0}: {1}".format(src, exc))
        docs, field = _load_yaml(text, "src " + src), "src " + src
    else:
        return [("options", None)]
    if len(docs) == 1:
        return [(field, docs[0])]
    return [("{0}[{1}]".format(field, i), doc) for i, doc in enumerate(docs)]


def build_definitions(definition=None, src=None, name=None, namespace=None, labels=None, annotations=None,
                      spec=None, api_version=None, default_namespace="default", need_spec=True, kind=VMI):
    """The objects the user wants, from definition (one or a list), src (one or more documents) or the options.

    ``name`` and ``spec`` only apply to a single object; namespace, labels and annotations to each.
    """
    pairs = _raw_documents(definition, src)
    if len(pairs) > 1 and name:
        raise DefinitionError("name: set metadata.name in each document; the name option names a single object")
    docs = [_complete(doc, field, name, namespace, labels, annotations, spec, api_version, default_namespace,
                      need_spec, kind) for field, doc in pairs]
    seen = {}
    for (field, _doc), doc in zip(pairs, docs):
        key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
        if key in seen:
            raise DefinitionError("{0}: {1} {2}/{3} is also declared in {4}".format(
                field, kind.kind, key[0], key[1], seen[key]))
        seen[key] = field
    return docs


def build_definition(definition=None, src=None, name=None, namespace=None, labels=None, annotations=None,
                     spec=None, api_version=None, default_namespace="default", need_spec=True, kind=VMI):
    """The one object the user wants (see build_definitions)."""
    docs = build_definitions(definition, src, name, namespace, labels, annotations, spec, api_version,
                             default_namespace, need_spec, kind)
    if len(docs) != 1:
        raise DefinitionError("expected exactly one {0}, got {1}".format(kind.kind, len(docs)))
    return docs[0]


def _complete(doc, field, name, namespace, labels, annotations, spec, api_version, default_namespace, need_spec,
              kind):
    if doc is None:
        doc = {"apiVersion": api_version or kind.default_api_version, "kind": kind.kind}
    if not isinstance(doc, dict):
        raise DefinitionError("{0}: expected a mapping (a Kubernetes object)".format(field))
    doc.setdefault("apiVersion", api_version or kind.default_api_version)
    doc.setdefault("kind", kind.kind)
    if doc["kind"] != kind.kind:
        raise DefinitionError("{0}: kind must be {1}, not {2!r}".format(field, kind.kind, doc["kind"]))
    if doc["apiVersion"] not in kind.api_versions:
        raise DefinitionError("{0}: apiVersion must be one of {1}, not {2!r}".format(
            field, ", ".join(kind.api_versions), doc["apiVersion"]))
    meta = doc.setdefault("metadata", {}) or {}
    doc["metadata"] = meta
    if name:
        meta["name"] = name
    if namespace:
        meta["namespace"] = namespace
    meta.setdefault("namespace", default_namespace)
    for key, value in (("labels", labels), ("annotations", annotations)):
        if value:
            merged = dict(meta.get(key) or {})
            merged.update(value)
            meta[key] = merged
    if spec is not None:
        doc["spec"] = spec
    if not meta.get("name"):
        if meta.get("generateName"):
            raise DefinitionError("{0}: metadata.generateName is not supported: an idempotent {1} needs "
                                  "metadata.name".format(field, kind.kind))
        raise DefinitionError("{0}: name is required: set the name option or metadata.name".format(field))
    if need_spec and not doc.get("spec"):
        raise DefinitionError(
            "spec is required to create {0} {1}/{2}: set spec, definition or src".format(
                kind.kind, meta["namespace"], meta["name"]
            )
        )
    return doc


class ObjectService:
    """What the services of every kind share: get, wait with a useful timeout message, results."""

    kind = VMI

    def __init__(self, client, check_mode=False, hidden_fields=None, diff=True):
        self.client = client
        self.check_mode = check_mode
        self.hidden_fields = hidden_fields or []
        self.diff = diff  # without diff mode, no copies of before and after are made

    def _call(self, verb, namespace, name, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise KubeVirtOpsError(failure_message(verb, self.kind.kind, namespace, name, exc))

    def observed(self, namespace, name, api_version=None, live=UNREAD):
        """The live object, as the caller read it already (a batch's LIST) or with a GET; None when missing."""
        return self.get(namespace, name, api_version) if live is UNREAD else live

    def get(self, namespace, name, api_version=None):
        try:
            return self.client.get(self.kind.object_path(namespace, name, api_version))
        except NotFoundError:
            return None
        except ApiError as exc:
            raise KubeVirtOpsError(failure_message("get", self.kind.kind, namespace, name, exc))

    def wait(self, namespace, name, expectation, timeout, initial=None, api_version=None):
        try:
            return wait_for_object(
                self.client,
                self.kind.collection_path(namespace, api_version),
                name,
                expectation,
                timeout,
                initial=initial,
            )
        except WaitTimeoutError as exc:
            events = recent_events(self.client, namespace, name, kind=self.kind.kind)
            raise WaitTimeoutError(
                "{0} {1}/{2} {3}; {4}".format(
                    self.kind.kind, namespace, name, exc, describe_last_seen(exc.last_seen, events)
                ),
                exc.last_seen,
            )
        except ApiError as exc:
            raise KubeVirtOpsError(failure_message("watch", self.kind.kind, namespace, name, exc))

    def _result(self, changed, method, before, after, started, summary=None):
        shown = hide(after, self.hidden_fields)
        result = {
            "changed": changed,
            "method": method,
            self.kind.result_key: shown or {},
            "summary": summary if summary is not None else summarize(after),
            "duration": round(time.monotonic() - started, 3),
        }
        if self.diff:
            result["diff"] = {
                "before": normalize(before, self.hidden_fields),
                "after": normalize(after, self.hidden_fields),
            }
        return result


class VmiService(ObjectService):
    """Drives one VMI to ``present`` or ``absent``; returns the module result."""

    # --- states ---------------------------------------------------------------
    def present(self, desired, recreate=False, wait=False, expectation=None, wait_timeout=120,
                delete_options=None, live=UNREAD):
        started = time.monotonic()
        meta = desired["metadata"]
        ns, name, api_version = meta["namespace"], meta["name"], desired["apiVersion"]
        coll = collection_path(ns, api_version)
        live = self.observed(ns, name, api_version, live)
        method = "unchanged"
        after = live
        if live is None:
            try:
                after = self.client.create(coll, desired, dry_run=self.check_mode)
                method = "created"
            except ConflictError:
                live = self.get(ns, name, api_version)  # someone created it meanwhile (or a narrowed LIST missed it)
                if live is None:
                    raise
                after = live
            except ApiError as exc:
                raise KubeVirtOpsError(failure_message("create", KIND, ns, name, exc))
        if method == "unchanged":
            differences = subset_differences(desired.get("spec") or {}, live.get("spec") or {}, "spec")
            if differences and not recreate:
                raise DefinitionError(
                    "VirtualMachineInstance {0}/{1} exists with a different spec, and a VMI's spec is immutable "
                    "(set recreate: true to delete it, stopping the VM, and create it again): {2}".format(
                        ns, name, describe_differences(differences)
                    )
                )
            if differences:
                after = self._recreate(desired, live, wait_timeout, delete_options)
                method = "recreated"
            else:
                patch = metadata_patch(meta, live.get("metadata") or {})
                if patch:
                    after = self._call(
                        "patch", ns, name, self.client.merge_patch, object_path(ns, name, api_version), patch,
                        dry_run=self.check_mode,
                    )
                    method = "patched"
        changed = method != "unchanged"
        if wait and not (self.check_mode and changed):
            after = self.wait(ns, name, expectation or Expectation(phase="Running"), wait_timeout,
                              initial=after, api_version=api_version)
        return self._result(changed, method, live, after, started)

    def _recreate(self, desired, live, wait_timeout, delete_options=None):
        meta = desired["metadata"]
        ns, name, api_version = meta["namespace"], meta["name"], desired["apiVersion"]
        path = object_path(ns, name, api_version)
        self._call("delete", ns, name, self.client.delete, path, delete_options, dry_run=self.check_mode)
        if self.check_mode:
            # The name is still taken, so the server cannot dry-run the create; show the wanted object.
            shown = copy.deepcopy(desired)
            shown["metadata"] = dict(live.get("metadata") or {}, **meta)
            return shown
        # The name must be free before the new VMI can take it.
        self.wait(ns, name, Expectation(absent=True), wait_timeout, api_version=api_version)
        return self._call("create", ns, name, self.client.create, collection_path(ns, api_version), desired)

    def absent(self, namespace, name, delete_options=None, wait=False, wait_timeout=120,
               api_version=DEFAULT_API_VERSION, live=UNREAD):
        started = time.monotonic()
        live = self.observed(namespace, name, api_version, live)
        if live is None:
            return self._result(False, "unchanged", None, None, started)
        try:
            self.client.delete(object_path(namespace, name, api_version), delete_options, dry_run=self.check_mode)
        except NotFoundError:
            return self._result(False, "unchanged", None, None, started)  # gone meanwhile
        except ApiError as exc:
            raise KubeVirtOpsError(failure_message("delete", KIND, namespace, name, exc))
        if wait and not self.check_mode:
            self.wait(namespace, name, Expectation(absent=True), wait_timeout, api_version=api_version)
        return self._result(True, "deleted", live, None, started)


def delete_options_from_params(options):
    """DeleteOptions (camelCase, as the API wants) from the module's snake_case suboptions."""
    if not options:
        return {}
    out = {}
    if options.get("grace_period_seconds") is not None:
        out["gracePeriodSeconds"] = options["grace_period_seconds"]
    if options.get("propagation_policy"):
        out["propagationPolicy"] = options["propagation_policy"]
    pre = options.get("preconditions") or {}
    pre = dict((k, v) for k, v in (("uid", pre.get("uid")), ("resourceVersion", pre.get("resource_version"))) if v)
    if pre:
        out["preconditions"] = pre
    return out
