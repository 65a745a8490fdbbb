"""Services of the virtops.kubevirt collection."""
