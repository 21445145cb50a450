"""Start the container image build early, and run the container tests last.

Building the image (tests/deploy/test_container.py: a debootstrapped base,
the locked wheelhouse, ``podman build``) takes about two minutes of mostly
download and install work that no other test shares. Once the session has
collected a container test, the build starts in a background thread and
the container tests move to the end of the run, so the build overlaps the
rest of the suite instead of adding to it. The tests and what they check
are unchanged: the ``image`` fixture waits for the build and fails with
its error; the images are removed at the end even if no test asked for them.
"""

from __future__ import annotations

import sys

import pytest

CONTAINER_TESTS = "test_container.py"


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    container = [item for item in items if item.path.name == CONTAINER_TESTS]
    if not container or config.option.collectonly:
        return
    items[:] = [item for item in items if item.path.name != CONTAINER_TESTS] + container
    from tests.deploy.test_container import BUILD

    BUILD.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    module = sys.modules.get("tests.deploy.test_container")
    if module is not None:
        module.BUILD.remove()
