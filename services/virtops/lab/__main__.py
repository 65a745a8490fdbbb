import sys

from virtops.lab.cli import main

sys.exit(main())
