"""``virtops-lab up|status|down|build|guest|debian``: the lab's command line."""

from __future__ import annotations

import argparse
import json
import sys

from virtops.lab.build import BuildError
from virtops.lab.control_plane import ControlPlane, LabError
from virtops.lab.debian_image import DebianImageError
from virtops.lab.guest import GuestBuildError
from virtops.lab.registry import RegistryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtops-lab", description=__doc__)
    parser.add_argument("command", choices=["up", "status", "down", "build", "guest", "debian"])
    parser.add_argument("--name", default="default", help="lab instance name (default: default)")
    parser.add_argument("--state-dir", help="state directory (default: /tmp/virtops-lab/NAME)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--stack", action="store_true",
                        help="also run the virtops controller and node agent(s) against the lab")
    parser.add_argument("--nodes", type=int, default=1, help="node agents to run with --stack (default 1)")
    parser.add_argument("--no-debian-image", dest="debian_image", action="store_false",
                        help="up: do not push the Debian 12 cloud image virtops/debian:12 into the lab's registry")
    args = parser.parse_args(argv)
    lab = ControlPlane(args.name, args.state_dir, stack=args.stack, nodes=args.nodes, debian_image=args.debian_image)
    try:
        if args.command == "build":
            from virtops.lab.build import ensure_binaries

            for name, path in ensure_binaries().items():
                print(f"{name}: {path}")
            return 0
        if args.command == "guest":
            from virtops.lab.guest import GUEST_IMAGE, ensure_guest

            guest = ensure_guest()
            print(json.dumps(dict(guest.manifest, directory=str(guest.directory)), indent=2, sort_keys=True)
                  if args.json else f"{GUEST_IMAGE}: {guest.directory}")
            return 0
        if args.command == "debian":
            from virtops.lab.debian_image import DEBIAN_IMAGE, ensure_debian_image

            image = ensure_debian_image()
            print(json.dumps(dict(image.manifest, disk=str(image.disk)), indent=2, sort_keys=True)
                  if args.json else f"{DEBIAN_IMAGE}: {image.disk}")
            return 0
        if args.command == "up":
            info = lab.up()
            human = f"lab {info.name} up: {info.server}\nexport KUBECONFIG={info.kubeconfig}"
            print(info.to_json() if args.json else human)
            return 0
        if args.command == "status":
            info = lab.status()
            if info is None:
                print('{"healthy": false, "exists": false}' if args.json else f"lab {args.name}: not running")
                return 3
            health = "healthy" if info.healthy else "UNHEALTHY"
            print(info.to_json() if args.json else f"lab {info.name}: {health} {info.server}")
            return 0 if info.healthy else 1
        changed = lab.down()
        print(f'{{"changed": {str(changed).lower()}}}' if args.json else f"lab {args.name}: down")
        return 0
    except (LabError, BuildError, GuestBuildError, RegistryError, DebianImageError) as exc:
        print(f"virtops-lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
