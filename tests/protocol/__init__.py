"""Protocol tests against in-process servers (aiosmtpd, pymap) on loopback."""
