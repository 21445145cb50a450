"""Test harnesses: the real mail stack, Prometheus, routes, daemon process, loopback servers."""
