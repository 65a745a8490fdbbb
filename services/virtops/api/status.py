"""Kubernetes `Status` objects with apimachinery's wording (k8s.io/apimachinery/pkg/api/errors)."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


class StatusError(Exception):
    """An answer that is a Kubernetes Status with code >= 400."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> Obj:
        status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            status["details"] = self.details
        return status


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{_qualified(group, resource)} "{name}" not found',
                       {"name": name, "group": group, "kind": resource})


def conflict(group: str, resource: str, name: str, why: str) -> StatusError:
    return StatusError(409, "Conflict",
                       f'Operation cannot be fulfilled on {_qualified(group, resource)} "{name}": {why}',
                       {"name": name, "group": group, "kind": resource})


def forbidden(group: str, resource: str, name: str, why: str) -> StatusError:
    return StatusError(403, "Forbidden", f'{_qualified(group, resource)} "{name}" is forbidden: {why}',
                       {"name": name, "group": group, "kind": resource})


def unauthorized(message: str = "Unauthorized") -> StatusError:
    return StatusError(401, "Unauthorized", message)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def not_found_path(path: str) -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource",
                       {"causes": [{"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}]})


def method_not_allowed(method: str) -> StatusError:
    return StatusError(405, "MethodNotAllowed",
                       f"the server does not allow this method on the requested resource: {method}")


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {message}",
                       {"causes": [{"message": message}]})
