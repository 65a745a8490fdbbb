"""Pinned versions of the lab's components (keep in step with lab/go/*/go.mod)."""

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.5.35"
# The oldest Go that builds both wrapper modules (their go.mod say go 1.26.0).
MIN_GO = (1, 26)
