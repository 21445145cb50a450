"""Allow ``python -m smtp_probe``."""

import sys

from smtp_probe.cli import main

sys.exit(main())
