# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""One exception family for everything the modules can fail on.

Modules catch ``KubeVirtOpsError`` once, in ``main()``, and fail with its text.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class KubeVirtOpsError(Exception):
    """Base of every error the modules report to the user."""


class DefinitionError(KubeVirtOpsError):
    """The user's input is wrong; the message names the field."""


class UnreachableError(KubeVirtOpsError):
    """The API server could not be reached."""

    def __init__(self, host, reason):
        self.host = host
        self.reason = reason
        super(UnreachableError, self).__init__(
            "Cannot reach the Kubernetes API at {0}: {1}".format(host, reason)
        )


class ApiError(KubeVirtOpsError):
    """The API server answered with an error status."""

    status = 0

    def __init__(self, status, reason, message, body=None):
        self.status = status
        self.reason = reason or ""
        self.message = message or ""
        self.body = body or {}
        super(ApiError, self).__init__(self.message or "HTTP {0} {1}".format(status, reason))

    @property
    def causes(self):
        return (self.body.get("details") or {}).get("causes") or []


class BadRequestError(ApiError):
    status = 400


class UnauthorizedError(ApiError):
    status = 401


class ForbiddenError(ApiError):
    status = 403


class NotFoundError(ApiError):
    status = 404


class ConflictError(ApiError):
    """409: AlreadyExists, or a conflict such as KubeVirt's "VMI is already paused"."""

    status = 409


class GoneError(ApiError):
    """410: the watch's resourceVersion is too old; list again."""

    status = 410


class InvalidError(ApiError):
    """422: the object failed validation; ``causes`` name the fields."""

    status = 422


_BY_STATUS = dict(
    (cls.status, cls)
    for cls in (BadRequestError, UnauthorizedError, ForbiddenError, NotFoundError, ConflictError, GoneError,
                InvalidError)
)


def api_error(status, body):
    """The typed error for an HTTP status and the Status object (or text) the server sent."""
    if not isinstance(body, dict):
        body = {"message": (body or "").strip()}
    cls = _BY_STATUS.get(status, ApiError)
    return cls(status, body.get("reason"), body.get("message"), body)


class WaitTimeoutError(KubeVirtOpsError):
    """The wanted state was not reached in time; ``last_seen`` is what was observed last."""

    def __init__(self, message, last_seen=None):
        self.last_seen = last_seen
        super(WaitTimeoutError, self).__init__(message)


def failure_message(verb, kind, namespace, name, error):
    """'Failed to <verb> <kind> <ns>/<name>: <reason>' with the RBAC detail a 403 needs."""
    target = "{0}/{1}".format(namespace, name) if namespace else name
    text = "Failed to {0} {1} {2}: {3}".format(verb, kind, target, error)
    if isinstance(error, ForbiddenError):
        text += " (RBAC denied this request; grant the verb on that resource, e.g. bind kubevirt.io:edit)"
    return text


class BatchError(KubeVirtOpsError):
    """Some objects of a batch failed; ``results`` has one entry per object, failed or not."""

    def __init__(self, message, results, changed):
        self.results = results
        self.changed = changed
        super(BatchError, self).__init__(message)
