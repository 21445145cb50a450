"""What the extra test Postfix instances (policystack, hopstack) share: their directories and queue.

Each instance lives below its own ``root``: ``postfix/`` (``config_directory``),
``spool/`` (``queue_directory``, where ``pid/master.pid`` is), ``data/``
(``data_directory``) and ``postfix.log`` (``maillog_file``); the stacks'
main.cf templates name these paths. The MailStack's own Postfix keeps an
older layout (``postfix-data/``, ``log/``) and shares only
:func:`queue_records`.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import procs


@dataclass(frozen=True)
class Instance:
    """The paths of one Postfix instance below ``root``."""

    root: Path

    @property
    def conf_dir(self) -> Path:
        """``config_directory``: main.cf, master.cf, tables."""
        return self.root / "postfix"

    @property
    def queue_dir(self) -> Path:
        """``queue_directory``."""
        return self.root / "spool"

    @property
    def data_dir(self) -> Path:
        """``data_directory``."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """``maillog_file``."""
        return self.root / "postfix.log"

    @property
    def master_pid(self) -> Path:
        """The master's pid file (``postfix start`` writes it)."""
        return self.queue_dir / "pid" / "master.pid"

    def make_dirs(self) -> None:
        """Create the config, queue and data directories (``root`` must exist).

        ``postfix start`` makes the queue's subdirectories; the data
        directory must be the ``postfix`` user's.

        Raises:
            OSError: a directory exists already or cannot be made.
            KeyError: there is no ``postfix`` user.
        """
        postfix = pwd.getpwnam("postfix")
        self.conf_dir.mkdir(mode=0o755)
        self.queue_dir.mkdir(mode=0o755)
        self.data_dir.mkdir(mode=0o700)
        os.chown(self.data_dir, postfix.pw_uid, postfix.pw_gid)

    def stop(self, owner: Path) -> None:
        """Stop this instance's master if it runs and belongs to ``owner`` (a stack's root)."""
        procs.stop_if_ours(self.master_pid, "master", owner)


def queue_records(postqueue_json: str) -> list[dict[str, Any]]:
    """``postqueue -j`` output as one dict per queued message (see MailStack.queue)."""
    return [json.loads(line) for line in postqueue_json.splitlines() if line.strip()]
