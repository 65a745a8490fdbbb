"""Run a daemon (libvirtd -d) as a child subreaper's descendant, and reap its orphans at once.

Where PID 1 is not an init that reaps orphaned children promptly (this sandbox's PID 1 reaps about every
1.7 s), every exited qemu stays a zombie until then, and libvirt's destroy, which polls kill(pid, 0) every
200 ms until the process is gone, waits for it: ~1.2 s per destroy instead of ~0.2 s. With
PR_SET_CHILD_SUBREAPER the daemon's orphans (qemu, daemonized by libvirtd) are re-parented to this process,
which waits for them as they exit. hack/libvirt-up.sh starts libvirtd this way where there is no systemd.

Usage: subreaper.py COMMAND [ARG...]   (returns once COMMAND has started; the reaper stays in the background)
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.fork():  # the caller gets its shell back; the reaper lives on in its own session
        return 0
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os._exit(1)
    child = os.fork()
    if child == 0:
        os.execvp(argv[0], argv)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:  # every descendant that exits, as it exits; done once none is left (libvirtd and its qemus)
        try:
            os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
