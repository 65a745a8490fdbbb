"""Why the agent does not start a VMI; each names the spec field at fault."""

from __future__ import annotations


class UnsupportedSpecError(Exception):
    """The VMI asks for something this node cannot provide; ``field`` is the spec path at fault.
    The VMI fails: its spec will not change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SecretUnavailableError(UnsupportedSpecError):
    """A Secret the spec names cannot be read (missing, lacks the key, or this node may not read it yet).
    The VMI waits with a condition naming the field and is tried again: the Secret may come."""
