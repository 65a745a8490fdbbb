# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Comparisons and diffs of Kubernetes objects.

Diffs ignore what the server changes on every write (resourceVersion,
generation, managedFields, uid, creationTimestamp) and the user's
``hidden_fields``. Desired-versus-live checks treat fields only the server set
(defaults) as equal, so a manifest that omits defaults is still "unchanged".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re

VOLATILE_METADATA = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp", "selfLink")
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[([^\]]+)\]")


def split_path(path):
    """'metadata.annotations[example.com/x]' -> ['metadata', 'annotations', 'example.com/x']"""
    return [m.group(1) or m.group(2) for m in _PATH_TOKEN.finditer(path)]


def remove_path(obj, path):
    keys = split_path(path)
    node = obj
    for key in keys[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if isinstance(node, dict):
        node.pop(keys[-1], None)


def normalize(obj, hidden_fields=None):
    """A copy fit for a diff or for module output."""
    if obj is None:
        return {}
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata") or {}
    for key in VOLATILE_METADATA:
        meta.pop(key, None)
    for path in hidden_fields or []:
        remove_path(obj, path)
    return obj


def hide(obj, hidden_fields):
    """A copy of the object with hidden_fields removed (volatile metadata kept: users read it)."""
    if obj is None or not hidden_fields:
        return obj
    return remove_fields(copy.deepcopy(obj), hidden_fields)


def remove_fields(obj, hidden_fields):
    """hidden_fields removed from the object itself, for objects the caller owns (a list just read):
    no copy, which on 1,000 objects is most of the cost of hiding."""
    for path in hidden_fields or []:
        remove_path(obj, path)
    return obj


def _fmt(path):
    return path or "(root)"


def subset_differences(desired, live, path=""):
    """Paths where ``desired`` is not satisfied by ``live``, as (path, wanted, live) tuples.

    A key missing from ``desired`` is a server default and never a difference.
    Lists must have the same length; their items are compared the same way.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [(_fmt(path), desired, live)]
        out = []
        for key, value in desired.items():
            sub = "{0}.{1}".format(path, key) if path else key
            if key not in live:
                if value not in (None, {}, []):
                    out.append((sub, value, None))
                continue
            out.extend(subset_differences(value, live[key], sub))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return [(_fmt(path), desired, live)]
        out = []
        for index, (want, have) in enumerate(zip(desired, live)):
            out.extend(subset_differences(want, have, "{0}[{1}]".format(path, index)))
        return out
    if _same_scalar(desired, live):
        return []
    return [(_fmt(path), desired, live)]


def _same_scalar(desired, live):
    if desired == live:
        return True
    # YAML gives ints where the server may echo strings (and vice versa), e.g. quantities.
    if isinstance(desired, (int, float)) and not isinstance(desired, bool) and isinstance(live, str):
        return str(desired) == live
    if isinstance(live, (int, float)) and not isinstance(live, bool) and isinstance(desired, str):
        return str(live) == desired
    return False


def describe_differences(differences, limit=10):
    lines = ["{0}: wanted {1!r}, live {2!r}".format(p, w, h) for p, w, h in differences[:limit]]
    if len(differences) > limit:
        lines.append("... and {0} more".format(len(differences) - limit))
    return "; ".join(lines)


def metadata_patch(desired_meta, live_meta):
    """A merge patch for the labels and annotations that differ, or None."""
    patch = {}
    for field in ("labels", "annotations"):
        wanted = desired_meta.get(field) or {}
        have = live_meta.get(field) or {}
        changed = dict((k, v) for k, v in wanted.items() if have.get(k) != v and not (v is None and k not in have))
        if changed:
            patch[field] = changed
    return {"metadata": patch} if patch else None
