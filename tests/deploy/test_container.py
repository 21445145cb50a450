"""The container image: the real ``Dockerfile`` built by podman, and run.

No container registry is reachable where CI runs, so everything the build
needs is made here:

* the base image: ``scripts/build-base-image`` debootstraps this machine's
  Debian release (python3, python3-venv, ca-certificates) and imports it into
  podman; the build gets it as ``PYTHON_IMAGE``;
* the dependencies: the host's pip downloads the files ``requirements.lock``
  pins (binary wheels for the base's Python version, the sdists of authres,
  dkimpy and pyspf), checked against the lock's hashes, into a wheelhouse,
  handed over as
  ``--build-context wheelhouse=DIR --build-arg PIP_NO_INDEX=1``, so the build
  itself runs with no network.

The image then runs hardened as the deploy files run it: read-only root
filesystem, its own non-root UID, no capabilities, no new privileges, and
explicit ulimits. The daemon (the image's ``CMD`` on a mounted config, host
network, bound to 127.0.0.1 on a free port) answers ``/-/healthy`` and
``/-/ready`` from the host, the image's ``HEALTHCHECK`` passes (``podman
healthcheck run``) and fails when nothing serves, and ``podman stop``
(SIGTERM) ends it with exit 0; ``smtp-probe demo`` (no network but the
container's own loopback) delivers; ``--version`` and ``validate`` work.

Podman is called as ``podman --runtime runc --cgroup-manager cgroupfs`` (crun
and the systemd cgroup manager fail on these machines). Every container and
image made here has a per-run name and is removed at the end, failed or not.

A missing podman or debootstrap fails the tests, it never skips them. Set
``SMTP_PROBE_TEST_BASE_IMAGE`` to an existing base image to use it instead of
making one (it is then left in place).

The build takes about two minutes and shares nothing with the other tests,
so ``tests/deploy/conftest.py`` starts it in a background thread (niced) as
soon as a session has collected these tests, and runs them last; the
``image`` fixture waits for it and fails with the build's own error.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtp_probe import __version__
from tests.support import lockfile
from tests.support.prom import free_port

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
CONFIG_PATH = "/etc/smtp-probe/config.yml"
EXAMPLE_PATH = "/etc/smtp-probe/config.example.yml"
VENV = "/opt/smtp-probe"
HTTP_PORT = 10587
UID = "10001"
HEALTHCHECK_URL_ENV = "SMTP_PROBE_HEALTHCHECK_URL"
BASE_IMAGE_ENV = "SMTP_PROBE_TEST_BASE_IMAGE"

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
# As deploy/compose.yaml and the Kubernetes manifests run the image.
HARDENED = [
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--ulimit=nofile=4096:4096",
    "--ulimit=nproc=1024:1024",
]
RUN_ID = uuid.uuid4().hex[:10]
NICE = ["nice", "-n", "10"]
"""The build runs beside other tests: it yields the CPU to their servers and deadlines."""
# The first test may wait for the build (the base image alone takes about a minute).
pytestmark = pytest.mark.timeout(600)


def podman(
    *args: str, timeout: float = 60, check: bool = True, nice: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS`` (runc, cgroupfs); with ``check``, fail the test on non-zero exit.

    ``nice``: at a lower CPU priority (:data:`NICE`), as the background build runs.
    """
    done = subprocess.run(
        [*(NICE if nice else []), *PODMAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"podman {' '.join(args[:3])} ... exited {done.returncode}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    return done


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: apt-get install {package} (the image tests need it)")


# -------------------------------------------------------------------- build


@dataclass(frozen=True)
class Image:
    tag: str
    inspect: dict[str, Any]
    timings: dict[str, float]


class Build:
    """The image build, run once per session in a background thread.

    :meth:`start` begins it (idempotent); :meth:`image` waits for it and
    returns the image or raises what the build raised; :meth:`remove` waits
    for it to end and removes every image it made, built or half-built.
    """

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._made: list[str] = []
        self._workdir: Path | None = None
        self._result: Image | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="image build", daemon=True)
                self._thread.start()

    def image(self) -> Image:
        """The built image (starting the build if nothing did yet).

        Raises:
            BaseException: whatever failed the build (``pytest.fail``'s
                exception for a failed step, with its output).
        """
        self.start()
        assert self._thread is not None
        # Each step has its own deadline; this backstop stays under the test's timeout.
        self._thread.join(570)
        assert not self._thread.is_alive(), "the image build did not end within 570 s"
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def remove(self) -> None:
        """Remove the images made (after waiting for a running build) and the wheelhouse."""
        if self._thread is not None:
            self._thread.join(600)
        for tag in reversed(self._made):
            podman("rmi", "--force", "--ignore", tag, check=False)
        self._made.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _run(self) -> None:
        try:
            self._result = self._build()
        except BaseException as exc:  # noqa: BLE001 - pytest.fail's exception too; re-raised by image()
            self._error = exc

    def _build(self) -> Image:
        timings = self.timings
        need("podman", "podman runc")
        base = os.environ.get(BASE_IMAGE_ENV)
        if not base:
            need("debootstrap", "debootstrap")
            base = f"localhost/smtp-probe-test-base:{RUN_ID}"
            self._made.append(base)
            started = time.monotonic()
            done = subprocess.run(
                [*NICE, REPO / "scripts" / "build-base-image", base],
                capture_output=True,
                text=True,
                timeout=400,
                check=False,
            )
            assert done.returncode == 0, f"scripts/build-base-image failed:\n{done.stderr[-3000:]}"
            assert done.stdout.strip() == base
            timings["base image (debootstrap + import)"] = time.monotonic() - started

        started = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="smtp-probe-wheelhouse-"))
        wheels = wheelhouse_for(base, self._workdir)
        timings["wheelhouse (host pip)"] = time.monotonic() - started

        tag = f"localhost/smtp-probe-test:{RUN_ID}"
        self._made.append(tag)
        started = time.monotonic()
        podman(
            "build", "--layers=false", "--no-cache", "--network=none", "--format=docker",
            f"--build-arg=PYTHON_IMAGE={base}",
            f"--build-context=wheelhouse={wheels}", "--build-arg=PIP_NO_INDEX=1",
            f"--tag={tag}", "--file", str(REPO / "Dockerfile"), str(REPO),
            timeout=300, nice=True,
        )  # fmt: skip
        timings["podman build"] = time.monotonic() - started
        (inspect,) = json.loads(podman("image", "inspect", tag).stdout)
        return Image(tag, inspect, timings)


BUILD = Build()
"""The session's build: started by tests/deploy/conftest.py, awaited by :func:`image`."""


SOURCE_ONLY = ("authres", "dkimpy", "pyspf")
"""Dependencies published as sdists only (pure Python; the Dockerfile names them too)."""


def wheelhouse_for(base: str, where: Path) -> Path:
    """The files ``requirements.lock`` pins, for ``base``'s Python, and the build backend.

    Downloaded with ``--require-hashes`` from the lock's own hashes, so the
    wheelhouse holds exactly what the Dockerfile's hashed install accepts.
    """
    version = podman(
        "run", "--rm", "--network=none", "--no-healthcheck", *HARDENED, base,
        "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])",
    ).stdout.strip()  # fmt: skip
    assert re.fullmatch(r"3\.\d+", version), version
    binary, source = lockfile.split(lockfile.load(REPO / "requirements.lock"), SOURCE_ONLY)
    assert {pin.name for pin in source} == set(SOURCE_ONLY), source
    pip = [*NICE, sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    # wheel: pip builds a source-only package without a pyproject.toml with it.
    # Build-time only, so not locked: the build stage's pip takes them unhashed.
    backend = [*PROJECT["build-system"]["requires"], "wheel"]
    for what, args in [
        ("the locked wheels", ["--require-hashes", "--no-deps", "--only-binary=:all:",
                               f"--python-version={version}", "-r",
                               str(lockfile.requirements_file(binary, where / "binary.txt"))]),
        # Pure Python, source only: the image's build stage builds their wheels.
        ("the locked sdists", ["--require-hashes", "--no-deps", "--no-binary=:all:", "-r",
                               str(lockfile.requirements_file(source, where / "source.txt"))]),
        ("the build backend", ["--only-binary=:all:", f"--python-version={version}", *backend]),
    ]:  # fmt: skip
        done = subprocess.run(
            [*pip, "--dest", str(where / "wheels"), *args],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"pip download of {what} for Python {version}:\n{done.stderr[-3000:]}"
        )
    return where / "wheels"


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The image built from the Dockerfile (in the background since collection), removed at the end."""
    try:
        yield BUILD.image()
    finally:
        BUILD.remove()


@contextmanager
def container(image: Image, role: str, *args: str) -> Iterator[str]:
    """A detached, hardened container of ``image`` (``args``: run options, then command)."""
    name = f"smtp-probe-test-{RUN_ID}-{role}"
    try:
        podman("run", "--detach", f"--name={name}", *HARDENED, *args, timeout=60)
        yield name
    finally:
        podman("rm", "--force", "--ignore", "--time=0", name, check=False)


def logs(name: str) -> str:
    done = podman("logs", name, check=False)
    return (done.stdout + done.stderr)[-4000:]


def state(name: str) -> dict[str, Any]:
    (found,) = json.loads(podman("container", "inspect", name).stdout)
    value = found["State"]
    assert isinstance(value, dict)
    return value


def python_in(name: str, code: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the image's Python inside the running container ``name``."""
    return podman("exec", *options, name, f"{VENV}/bin/python", "-c", code, check=False)


def wait_until(
    what: str, deadline: float, ready: Callable[[], object], detail: Callable[[], str]
) -> None:
    """Poll ``ready()`` every 0.2 s until true; fail after ``deadline`` seconds with ``detail()``."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if ready():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} not within {deadline:.0f} s:\n{detail()}")


def stop_cleanly(name: str) -> float:
    """``podman stop`` (the image's STOPSIGNAL); assert exit 0; return the seconds it took."""
    started = time.monotonic()
    podman("stop", "--time=35", name, timeout=60)
    took = time.monotonic() - started
    stopped = state(name)
    assert not stopped["Running"]
    assert stopped["ExitCode"] == 0, f"exit {stopped['ExitCode']}:\n{logs(name)}"
    return took


# -------------------------------------------------------------------- tests


def test_build_time_and_image_size(image: Image, capsys: pytest.CaptureFixture[str]) -> None:
    size = int(image.inspect["Size"])
    with capsys.disabled():
        for step, seconds in image.timings.items():
            print(f"\n  image: {step}: {seconds:.1f} s", end="")
        print(f"\n  image: size {size / 1e6:.0f} MB")
    assert 20e6 < size < 400e6, size


def test_image_config_runs_as_non_root_with_a_healthcheck(image: Image) -> None:
    config = image.inspect["Config"]
    assert config["User"] == f"{UID}:{UID}", "numeric, so runAsNonRoot can verify it"
    assert config["Entrypoint"] == [f"{VENV}/bin/smtp-probe"]
    assert config["Cmd"] == ["run", "--config", CONFIG_PATH]
    assert list(config["ExposedPorts"]) == [f"{HTTP_PORT}/tcp"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Labels"]["org.opencontainers.image.title"] == "smtp-probe"
    healthcheck = image.inspect["Healthcheck"]
    assert healthcheck["Test"][:2] == ["CMD", f"{VENV}/bin/python"], "no curl: the image's Python"
    assert f"'http://127.0.0.1:{HTTP_PORT}/-/healthy'" in healthcheck["Test"][-1]
    assert healthcheck["Timeout"] == 5 * 10**9


def test_version_validate_and_no_build_tools(image: Image, tmp_path: Path) -> None:
    def run(*args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return podman(
            "run", "--rm", "--network=none", "--no-healthcheck", *HARDENED, *options,
            image.tag, *args, check=False,
        )  # fmt: skip

    version = run("--version")
    assert version.returncode == 0, version.stderr
    # The project's version (pyproject reads it from smtp_probe.__version__).
    assert version.stdout == f"smtp-probe {__version__}\n"

    # The shipped example, with the secrets it names given as a deployment would.
    example = (REPO / "config" / "example.yml").read_text(encoding="utf-8")
    lines = [line.split("#", 1)[0] for line in example.splitlines()]
    canary = f"canary-{secrets.token_hex(16)}"
    options: list[str] = []
    for number, path in enumerate(re.findall(r"_file:\s*(/\S+)", "\n".join(lines))):
        secret = tmp_path / f"secret-{number}"
        secret.write_text(f"{canary}\n", encoding="utf-8")
        options.append(f"--volume={secret}:{path}:ro")
    for variable in set(re.findall(r"\$\{(\w+)\}", "\n".join(lines))):
        options.append(f"--env={variable}={canary}")
    valid = run("validate", "--config", EXAMPLE_PATH, options=tuple(options))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert re.search(r"valid: \d+ probe\(s\)", valid.stdout), valid.stdout
    assert canary not in valid.stdout + valid.stderr

    broken = tmp_path / "broken.yml"
    broken.write_text("probes: []\nbogus: 1\n", encoding="utf-8")
    rejected = run(
        "validate", "--config", CONFIG_PATH, options=(f"--volume={broken}:{CONFIG_PATH}:ro",)
    )
    assert rejected.returncode == 3, rejected.stdout + rejected.stderr
    assert "bogus" in rejected.stderr

    # Hardened: no pip in the venv, no compiler, no curl.
    tools = run(
        "-c", "import shutil; print([t for t in ('pip', 'pip3', 'cc', 'gcc', 'curl') if shutil.which(t)])",
        options=(f"--entrypoint={VENV}/bin/python",),
    )  # fmt: skip
    assert tools.returncode == 0, tools.stderr
    assert tools.stdout.strip() == "[]"


def _closed_port_config(listen_port: int) -> str:
    closed = free_port()  # nothing listens there: every run fails at "connect", no mail needed
    return (
        "defaults: {interval: 2s, timeout: 1s, jitter: 0s}\n"
        "smtp_servers:\n"
        f"  closed: {{host: 127.0.0.1, port: {closed}, tls: none}}\n"
        "probes:\n"
        "  - {name: closed-port, smtp: closed, from: probe@example.test, to: sink@example.test}\n"
        f'server: {{listen: "127.0.0.1:{listen_port}"}}\n'
    )


def _get(port: int, path: str) -> tuple[int, str]:
    """GET from the daemon on the host's 127.0.0.1 (status 0 when it does not answer)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_daemon_is_healthy_and_ready_runs_hardened_and_stops_on_sigterm(
    image: Image, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(_closed_port_config(port), encoding="utf-8")
    config.chmod(0o644)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    with container(
        image, "daemon",
        "--network=host", f"--volume={config}:{CONFIG_PATH}:ro",
        f"--env={HEALTHCHECK_URL_ENV}=http://127.0.0.1:{port}/-/healthy",
        # The HEALTHCHECK must not send its request to a proxy from the environment.
        f"--env=http_proxy={dead_proxy}", f"--env=HTTP_PROXY={dead_proxy}",
        image.tag,  # the image's ENTRYPOINT + CMD
    ) as name:  # fmt: skip
        wait_until(
            "/-/healthy on the host",
            30,
            lambda: _get(port, "/-/healthy")[0] == 200 or not state(name)["Running"],
            lambda: logs(name),
        )
        assert state(name)["Running"], f"the daemon exited:\n{logs(name)}"
        assert _get(port, "/-/ready")[0] == 200

        checked = podman("healthcheck", "run", name, check=False, timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        # ... and it can fail: the same command against a port where nothing serves.
        test = image.inspect["Healthcheck"]["Test"][1:]
        nothing = f"--env={HEALTHCHECK_URL_ENV}=http://127.0.0.1:{free_port()}/-/healthy"
        down = podman("exec", nothing, name, *test, check=False)
        assert down.returncode != 0, "the healthcheck must fail when nothing serves"

        ids = podman("exec", name, "sh", "-c", "id -u; id -g; id -gn").stdout.split()
        assert ids == [UID, UID, "smtp-probe"]
        written = python_in(
            name, "import os\ntry: open('/written-by-smtp-probe', 'w')\nexcept OSError as e: print(e.errno)"
        )  # fmt: skip
        assert written.stdout.strip() == str(errno.EROFS), "the root filesystem is read-only"

        # The installed daemon really schedules: the probe runs and fails at connect.
        wanted = re.compile(
            r'^smtp_probe_failures_total\{probe="closed-port",stage="connect"\} [1-9]', re.M
        )
        wait_until(
            "a failed run at connect in /metrics",
            20,
            lambda: wanted.search(_get(port, "/metrics")[1]),
            lambda: _get(port, "/metrics")[1][-2000:],
        )

        took = stop_cleanly(name)
        assert took < 30, f"SIGTERM took {took:.1f} s"
        assert "daemon stopped" in logs(name)
    assert _get(port, "/-/healthy")[0] == 0, "nothing serves after the stop"


DEMO_METRICS = (
    "import urllib.request as u; "
    f"print(u.build_opener(u.ProxyHandler({{}})).open('http://127.0.0.1:{HTTP_PORT}/metrics', timeout=5).read().decode())"
)


def test_demo_delivers_inside_the_container(image: Image) -> None:
    # No network but the container's own loopback: the sandbox's fixed ports
    # (10025, 10143) and the status page's 10587 are the container's, not the host's.
    with container(image, "demo", "--network=none", image.tag, "demo") as name:
        delivered = re.compile(
            r'^smtp_probe_success\{probe="sandbox-inbox"\} 1\.0$.*'
            r'^smtp_probe_outcomes_total\{outcome="delivered",probe="sandbox-inbox"\} [1-9]',
            re.M | re.S,
        )

        def metrics() -> str:
            return python_in(name, DEMO_METRICS).stdout

        # The first scheduled run comes within an interval (10 s) plus jitter.
        wait_until(
            "a delivered sandbox-inbox run",
            45,
            lambda: delivered.search(metrics()),
            lambda: f"{metrics()[-2500:]}\n{logs(name)}",
        )
        checked = podman("healthcheck", "run", name, check=False, timeout=30)
        assert checked.returncode == 0, "the default HEALTHCHECK URL is the demo's default port"
        stop_cleanly(name)
