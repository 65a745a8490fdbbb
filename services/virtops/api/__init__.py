"""The aggregated API `subresources.kubevirt.io/v1`: pause/unpause VMIs, start/stop/restart VMs."""

from virtops.api.apiservice import register, serving_certificate, unregister
from virtops.api.server import SubresourceServer

__all__ = ["SubresourceServer", "register", "serving_certificate", "unregister"]
