"""Stand-in for get-pip.py that ansible-test runs to bootstrap its virtualenvs.

ansible-test downloads get-pip from the internet unless this cache file exists.
Offline, ensurepip provides pip and the rest of the arguments go to pip itself.
hack/setup.sh copies this file to ~/.ansible/test/cache/get_pip_24_2.py.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True)
if args:
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
