"""Tests of what ships beside the code: rules, manifests, the container image."""
