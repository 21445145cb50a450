"""A real Prometheus server (Debian's ``prometheus``) for end-to-end tests.

It scrapes the targets it is given every second, on 127.0.0.1 only, with its
storage in a temp dir, and answers PromQL through its HTTP API, so tests
check what Prometheus really sees rather than what the exporter prints.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or answered with an error."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    name: str, proc: subprocess.Popen[bytes], url: str, log: Callable[[], str], timeout: float
) -> None:
    """Wait until ``url`` answers 200 while ``proc`` keeps running.

    Raises:
        PrometheusError: the process exited, or was not ready within ``timeout``.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise PrometheusError(f"{name} exited early:\n{log()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise PrometheusError(f"{name} not ready after {timeout}s:\n{log()[-2000:]}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc``, and kill it if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Prometheus:
    """One private Prometheus; ``start()``, ``query()``, ``wait_for()``, ``stop()``."""

    def __init__(
        self,
        targets: list[str],
        *,
        job: str = "smtp-probe",
        rules: Sequence[Path] = (),
        alertmanagers: Sequence[str] = (),
        scrape_options: str = "",
    ) -> None:
        """``scrape_options``: extra YAML lines for the job (``scheme``, ``tls_config``, ...)."""
        self.scrape_options = scrape_options
        self.targets = targets
        self.job = job
        self.rules = list(rules)
        self.alertmanagers = list(alertmanagers)
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it is ready.

        Raises:
            PrometheusError: the binary is missing or it did not become ready.
        """
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError(
                "prometheus is not installed: apt-get install prometheus (the tests need it)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        rule_files = "".join(f"\n  - {path}" for path in self.rules)
        (self._dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:{rule_files}\n" if self.rules else "")
            + f"scrape_configs:\n  - job_name: {self.job}\n"
            + textwrap.indent(textwrap.dedent(self.scrape_options).strip("\n"), "    ")
            + ("\n" if self.scrape_options else "")
            + "    static_configs:\n"
            f"      - targets: {json.dumps(self.targets)}\n"
            + (
                "alerting:\n  alertmanagers:\n    - static_configs:\n"
                f"        - targets: {json.dumps(self.alertmanagers)}\n"
                if self.alertmanagers
                else ""
            )
        )
        self._log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_ready("prometheus", self._proc, self.url("/-/ready"), self.log, timeout)

    def url(self, path: str) -> str:
        """Address of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        """What Prometheus logged so far."""
        return (self._dir / "prometheus.log").read_text(errors="replace") if self._dir else ""

    def api(self, path: str, **params: str) -> Any:
        """GET an API path and return its ``data``.

        Raises:
            PrometheusError: the API answered with an error.
        """
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(self.url(f"{path}?{query}"), timeout=10) as reply:  # noqa: S310
            body = json.load(reply)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Evaluate an instant PromQL query: ``{probe label (or ''): value}``."""
        data = self.api("/api/v1/query", query=expr)
        out: dict[str, float] = {}
        for sample in data["result"]:
            key = sample["metric"].get("probe", "")
            out[key] = float(sample["value"][1])
        return out

    def wait_for(
        self, expr: str, check: Callable[[dict[str, float]], bool], timeout: float = 30.0
    ) -> dict[str, float]:
        """Poll ``expr`` until ``check`` accepts its result; return that result.

        Raises:
            AssertionError: ``check`` never accepted it within ``timeout``.
        """
        end = time.monotonic() + timeout
        last: dict[str, float] = {}
        while time.monotonic() < end:
            last = self.query(expr)
            if check(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"{expr}: still {last} after {timeout}s")

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self._proc is not None:
            stop_process(self._proc)
        self._proc = None
        if self._dir is not None:
            self._log.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
