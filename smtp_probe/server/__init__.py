"""HTTP endpoints of the daemon."""
