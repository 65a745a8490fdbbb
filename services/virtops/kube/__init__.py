"""The services' one way to talk to the Kubernetes API (the modules have their own in plugins/)."""

from virtops.kube.client import (
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeClient,
    NotFoundError,
    log_failure,
    path_for,
    unchanged_since,
)

__all__ = ["ApiError", "ConflictError", "ForbiddenError", "GoneError", "InvalidError", "KubeClient", "NotFoundError",
           "log_failure", "path_for", "unchanged_since"]
