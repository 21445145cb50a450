"""Allow ``python -m smtp_probe``."""

from smtp_probe.cli import program

program()
