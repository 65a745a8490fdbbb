"""Read things from inside a running guest through its qemu guest agent, as an operator would with
``virsh qemu-agent-command``: ``guest-exec`` starts a program, ``guest-exec-status`` returns its exit code and
its output (base64). No network, no SSH: the virtio-serial channel every VMI's domain has.

For tests only (the agent itself never runs commands in a guest).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import libvirt
import libvirt_qemu

# Errors are raised (and a guest that is still booting answers none): libvirt's own printing of each is noise.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# One guest agent command may take this long (a TCG guest under load is slow to answer).
COMMAND_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class GuestRun:
    exitcode: int
    stdout: str
    stderr: str


class GuestAgentError(Exception):
    """The guest agent did not answer, or the program did not finish in the polls allowed."""


class GuestAgent:
    def __init__(self, domain: str, uri: str = "qemu:///system") -> None:
        self.domain = domain
        self.uri = uri

    def _command(self, execute: str, **arguments: object) -> dict:
        conn = libvirt.open(self.uri)
        try:
            dom = conn.lookupByName(self.domain)
            request = json.dumps({"execute": execute, "arguments": arguments} if arguments else {"execute": execute})
            answer = libvirt_qemu.qemuAgentCommand(dom, request, COMMAND_TIMEOUT_SECONDS, 0)
        except libvirt.libvirtError as exc:
            raise GuestAgentError(f"{execute} on {self.domain}: {exc.get_error_message()}") from exc
        finally:
            conn.close()
        return json.loads(answer)["return"]

    def run(self, *argv: str, polls: int = 600, delay: float = 0.1) -> GuestRun:
        """Run ``argv`` in the guest (as root, no shell) and return its exit code and output."""
        pid = self._command("guest-exec", path=argv[0], arg=list(argv[1:]), **{"capture-output": True})["pid"]
        for _poll in range(polls):
            status = self._command("guest-exec-status", pid=pid)
            if status.get("exited"):
                return GuestRun(exitcode=status.get("exitcode", -1), stdout=_decode(status.get("out-data")),
                                stderr=_decode(status.get("err-data")))
            time.sleep(delay)
        raise GuestAgentError(f"{argv[0]} did not finish in the guest of {self.domain}")

    def output(self, *argv: str) -> str:
        """The standard output of a program that must succeed."""
        result = self.run(*argv)
        if result.exitcode != 0:
            raise GuestAgentError(f"{' '.join(argv)} in {self.domain}: exit {result.exitcode}: {result.stderr}")
        return result.stdout

    def read_file(self, path: str) -> str:
        return self.output("/bin/cat", path)

    def cloud_init_status(self) -> dict:
        """``cloud-init status --format json`` (its exit code is 1 on errors and 2 on recoverable ones: the JSON
        says which; the caller judges)."""
        return json.loads(self.run("/usr/bin/cloud-init", "status", "--format", "json").stdout)


def _decode(data: str | None) -> str:
    return base64.b64decode(data).decode(errors="replace") if data else ""
