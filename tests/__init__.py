"""The test suite: unit/ (no network), protocol/ (in-process servers), e2e/ (real servers), deploy/."""
