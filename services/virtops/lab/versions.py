"""Pinned versions of the lab's components (keep in step with lab/go/*/go.mod)."""

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.5.35"
# KubeVirt's own virtctl, the client the tests use for every subresource (lab/go/virtctl).
KUBEVIRT_VERSION = "v1.7.0"
# The commit the v1.7.0 tag points at (the module proxy's Origin.Hash), stamped into `virtctl version`.
KUBEVIRT_COMMIT = "50b9b4d0cf1caaf56147411a1e6765134e0e82b9"
# The oldest Go that builds every wrapper module (their go.mod say go 1.26.0).
MIN_GO = (1, 26)
