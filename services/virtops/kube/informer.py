"""The services' one informer (agent and controller): list, then watch from the list's resourceVersion.

The callback gets ("SYNC", {"items": [...]}) after every list (the whole truth: replace the cache), then
("ADDED" | "MODIFIED" | "DELETED", object) per watch event. A watch that ends is resumed from the last
resourceVersion seen; 410 Gone lists again at once, any other failure after a capped backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from virtops.kube.client import GoneError, KubeClient

log = logging.getLogger("virtops.kube.informer")

Obj = dict[str, Any]


class Informer:
    def __init__(self, client: KubeClient, path: str, on_event: Callable[[str, Obj], None], stop: threading.Event,
                 *, query: Obj | None = None, name: str = "informer", watch_timeout_seconds: int = 60,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.client, self.path, self.on_event, self.stop_event = client, path, on_event, stop
        self.query, self.name, self.watch_timeout_seconds, self.on_error = query, name, watch_timeout_seconds, on_error
        self.synced = threading.Event()

    def run(self) -> None:
        """Until ``stop`` is set; events that arrive after it are dropped (a stopped service acts no more)."""
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                items, version = self.client.list(self.path, self.query)
                if self.stop_event.is_set():
                    return
                self.on_event("SYNC", {"items": items})
                self.synced.set()
                backoff = 0.5
                while not self.stop_event.is_set():
                    for event in self.client.watch(self.path, dict(self.query or {}, resourceVersion=version),
                                                   self.watch_timeout_seconds):
                        if self.stop_event.is_set():
                            return
                        obj = event.get("object") or {}
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if event.get("type") != "BOOKMARK":
                            self.on_event(event["type"], obj)
            except GoneError:
                log.info("%s: watch expired; listing again", self.name)
            except Exception as exc:  # noqa: BLE001 - the API may be away for a while: list again
                if self.stop_event.is_set():
                    return
                if self.on_error is not None:
                    self.on_error(exc)
                log.warning("%s: watch failed (%s); listing again in %.1fs", self.name, str(exc).strip(), backoff)
                self.stop_event.wait(backoff)
                # Capped low: the list after an API server restart must not wait long (it is one request).
                backoff = min(backoff * 2, 5.0)
