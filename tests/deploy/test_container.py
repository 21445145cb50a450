"""The Dockerfile, replayed for real on this machine (there is no Docker engine here).

The Dockerfile is parsed (stages, ``ENV``, ``WORKDIR``, ``COPY``, ``RUN``,
``USER``, ``HEALTHCHECK``, ``ENTRYPOINT``, ``CMD``) and its commands are run
as a build would run them, with each stage's filesystem a temp directory:

* the build context is the repo filtered by ``.dockerignore``;
* the build stage's ``COPY`` lines fill its ``WORKDIR`` from that context and
  its ``RUN`` line makes the wheel, in a fresh venv of the base image's
  Python version (standing in for the base image's ``pip``);
* the runtime stage's ``pip install`` ``RUN`` line installs that wheel into
  another fresh venv (dependencies from PyPI, binary wheels only, as in the
  image);
* ``ENTRYPOINT`` + ``CMD`` start the daemon from that venv (its config at the
  ``CMD``'s path inside the stage root, probing a closed 127.0.0.1 port so no
  mail is needed) and the ``HEALTHCHECK`` command, unchanged, is run against
  it; then ``STOPSIGNAL`` must stop it with exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.prom import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CONFIG_PATH = "/etc/smtp-probe/config.yml"
HTTP_PORT = 10587
HEALTHCHECK_URL_ENV = "SMTP_PROBE_HEALTHCHECK_URL"

# ----------------------------------------------------------- Dockerfile parsing


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case), ``--flags`` and the rest."""

    keyword: str
    flags: tuple[str, ...]
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON (exec form) argument list; fails the test for shell form."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not exec form"
        assert all(isinstance(item, str) for item in value)
        return [str(item) for item in value]

    def flag(self, name: str) -> str | None:
        """The value of ``--name=value``, if given."""
        for item in self.flags:
            key, _, value = item.partition("=")
            if key == f"--{name}":
                return value
        return None


@dataclass
class Stage:
    """One ``FROM`` stage and its instructions."""

    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name}: no {keyword}"
        return found[-1]  # as in Docker, the last one counts

    def env(self) -> dict[str, str]:
        """The stage's ``ENV`` values (``KEY=VALUE`` form)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.args):
                key, eq, value = item.partition("=")
                assert eq, f"line {instruction.line}: use ENV KEY=VALUE"
                values[key] = value
        return values


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with backslash continuations joined; comments and blank lines dropped."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        yield start, " ".join(part for part in buffer if part)
        buffer = []
    assert not buffer, "the Dockerfile ends inside a continuation"


def parse_dockerfile(text: str) -> tuple[list[Stage], dict[str, str]]:
    """Stages in order, and the global ``ARG`` defaults (used in ``FROM``)."""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for number, line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags: list[str] = []
        if keyword in {"RUN", "COPY", "ADD"}:
            while rest.startswith("--"):
                flag, _, rest = rest.partition(" ")
                flags.append(flag)
                rest = rest.strip()
        instruction = Instruction(keyword, tuple(flags), rest, number)
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may come before FROM"
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(instruction)
    return stages, global_args


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed, _ = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return {stage.name: stage for stage in parsed}


# ------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's ignore-pattern syntax (``*``, ``?``, ``**``) as a regex on a relative path."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """``(exclude?, pattern)`` in file order; the last matching rule decides."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((exclude, _pattern_regex(pattern)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends ``relative`` (a POSIX path) in the build context.

    As in Docker, a pattern matches a path when it matches the path itself or
    one of its parent directories.
    """
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exclude, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = not exclude
    return included


def build_context(destination: Path) -> list[str]:
    """Copy the files Docker would send as the build context; return their paths."""
    rules = dockerignore_rules()
    sent: list[str] = []
    for directory, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            source = Path(directory, filename)
            relative = source.relative_to(REPO).as_posix()
            if in_context(relative, rules):
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                sent.append(relative)
    return sorted(sent)


# ------------------------------------------------------------ replaying stages


@dataclass
class StageRoot:
    """A stage's filesystem: container path ``/x`` is ``root / "x"``."""

    root: Path
    workdir: str = "/"
    mounts: dict[str, Path] = field(default_factory=dict)

    def host(self, container_path: str) -> Path:
        path = (
            container_path if container_path.startswith("/") else f"{self.workdir}/{container_path}"
        )
        normal = os.path.normpath(path)
        for target, source in self.mounts.items():
            if normal == target or normal.startswith(f"{target}/"):
                return source / os.path.relpath(normal, target)
        return self.root / normal.lstrip("/")

    def map_command(self, command: str) -> str:
        """``command`` with every absolute path token moved into this root."""
        return re.sub(
            r"(?<=[\s=])/[^\s'\"]*", lambda m: str(self.host(m[0].rstrip("/"))), f" {command}"
        ).strip()


def copy_into(stage: StageRoot, instruction: Instruction, context: Path) -> None:
    """Replay ``COPY src... dest`` from the build context (no ``--from``)."""
    assert instruction.flag("from") is None, f"line {instruction.line}: COPY --from not replayed"
    *sources, dest = shlex.split(instruction.args)
    target = stage.host(dest)
    into_dir = dest.endswith("/") or len(sources) > 1
    for source in sources:
        origin = context / source
        assert origin.exists(), f"line {instruction.line}: {source} is not in the build context"
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)  # the contents, as Docker does
        else:
            destination = target / origin.name if into_dir or target.is_dir() else target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)


def run_in(stage: StageRoot, instruction: Instruction, env: Mapping[str, str]) -> str:
    """Run a shell-form ``RUN`` with ``/bin/sh -c`` in the stage root; return its output.

    Only ``pip`` commands are replayed on this host (in a venv); anything else
    (apt-get, say) would change the machine, so it fails the test until the
    replay learns it.
    """
    assert shlex.split(instruction.args)[0] == "pip", (
        f"line {instruction.line}: only pip RUN lines can be replayed: {instruction.args!r}"
    )
    assert not re.search(r"[;&|`]|\$\(", instruction.args), (
        f"line {instruction.line}: one plain pip command per RUN, please"
    )
    command = stage.map_command(instruction.args)
    cwd = stage.host(stage.workdir)
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"RUN (line {instruction.line}) {command!r}:\n{done.stderr[-3000:]}"
    )
    return done.stdout


def python_for(base_image: str) -> str:
    """The local interpreter of the base image's Python version (python:3.11-slim -> 3.11)."""
    match = re.fullmatch(r"python:(\d+\.\d+)[-.\w]*", base_image)
    assert match, f"base image {base_image!r} is not an official python image"
    version = match[1]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    found = shutil.which(f"python{version}")
    assert found, f"no local python{version} to stand in for {base_image}"
    return found


def make_venv(python: str, where: Path) -> Path:
    """A fresh venv (pip included); returns its bin directory."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=120)
    return where / "bin"


def stage_env(stage: Stage, bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(stage.env())
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


@dataclass
class Image:
    """The replayed image: the runtime stage's root, venv and environment."""

    stage: Stage
    root: StageRoot
    bin_dir: Path
    env: dict[str, str]
    context_files: list[str]
    timings: dict[str, float]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, stages: dict[str, Stage]) -> Image:
    work = tmp_path_factory.mktemp("image")
    timings: dict[str, float] = {}
    started = time.monotonic()

    context = work / "context"
    context_files = build_context(context)

    build = stages["build"]
    build_root = StageRoot(work / "build-root")
    build_bin = make_venv(python_for(build.base), work / "build-python")
    build_env = stage_env(build, build_bin)
    for instruction in build.instructions:
        if instruction.keyword == "WORKDIR":
            build_root.workdir = instruction.args
            build_root.host(instruction.args).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            copy_into(build_root, instruction, context)
        elif instruction.keyword == "RUN":
            run_in(build_root, instruction, build_env)
    timings["context + build stage (wheel)"] = time.monotonic() - started

    runtime = stages["runtime"]
    runtime_root = StageRoot(work / "runtime-root")
    runtime_bin = make_venv(python_for(runtime.base), work / "runtime-python")
    runtime_env = stage_env(runtime, runtime_bin)
    started = time.monotonic()
    for instruction in runtime.all("RUN"):
        if shlex.split(instruction.args)[0] == "useradd":
            continue  # checked by test_user_is_not_root; not run on this host
        for flag in instruction.flags:
            if flag.startswith("--mount="):
                options = dict(
                    o.partition("=")[::2] for o in flag.removeprefix("--mount=").split(",")
                )
                assert options.get("type") == "bind", flag
                source_stage = options["from"]
                assert source_stage == "build", flag
                runtime_root.mounts[options["target"]] = build_root.host(options["source"])
        run_in(runtime_root, instruction, runtime_env)
        runtime_root.mounts.clear()
    timings["runtime stage (pip install)"] = time.monotonic() - started
    for instruction in runtime.all("COPY"):
        copy_into(runtime_root, instruction, context)
    return Image(runtime, runtime_root, runtime_bin, runtime_env, context_files, timings)


# ---------------------------------------------------------------------- tests


def test_stages_are_slim_python_311_build_then_runtime(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["build", "runtime"], "multi-stage: build, then runtime (last)"
    for stage in stages.values():
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
    build_runs = [shlex.split(i.args) for i in stages["build"].all("RUN")]
    assert any(cmd[:2] == ["pip", "wheel"] and "--no-deps" in cmd for cmd in build_runs)
    install = [i for i in stages["runtime"].all("RUN") if "pip" in shlex.split(i.args)]
    assert len(install) == 1
    assert any(f.startswith("--mount=type=bind,from=build") for f in install[0].flags), (
        "the runtime stage installs the build stage's wheel"
    )
    # The slim image has no compiler: dependencies must come as wheels.
    assert "--only-binary=:all:" in shlex.split(install[0].args)


def test_user_is_not_root(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    user, _, group = runtime.one("USER").args.partition(":")
    assert user not in {"root", "0", ""}
    assert group not in {"root", "0"}
    assert user.isdigit(), "a numeric UID lets Kubernetes' runAsNonRoot verify it"
    useradd = [shlex.split(i.args) for i in runtime.all("RUN") if "useradd" in i.args]
    assert len(useradd) == 1
    assert useradd[0][useradd[0].index("--uid") + 1] == user
    # The USER must come after every RUN that needs root.
    position = {id(i): n for n, i in enumerate(runtime.instructions)}
    last_run = max(position[id(i)] for i in runtime.all("RUN"))
    assert position[id(runtime.one("USER"))] > last_run


def test_entrypoint_cmd_port_and_stop_signal(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    assert runtime.one("ENTRYPOINT").exec_form() == ["smtp-probe"]
    assert runtime.one("CMD").exec_form() == ["run", "--config", CONFIG_PATH]
    assert runtime.one("EXPOSE").args.split() == [str(HTTP_PORT)]
    assert runtime.one("STOPSIGNAL").args == "SIGTERM"


def test_healthcheck_asks_healthy_on_the_exposed_port(stages: dict[str, Stage]) -> None:
    healthcheck = stages["runtime"].one("HEALTHCHECK")
    options, _, command = healthcheck.args.partition(" CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "exec form, the image's own python (no curl in slim)"
    assert f"'http://127.0.0.1:{HTTP_PORT}/-/healthy'" in argv[2]
    assert HEALTHCHECK_URL_ENV in argv[2]
    assert "--timeout=5s" in options.split()


def test_dockerignore_sends_what_copy_needs_and_nothing_else(image: Image) -> None:
    sent = image.context_files
    assert "pyproject.toml" in sent
    assert "smtp_probe/cli.py" in sent
    assert "smtp_probe/demo.yml" in sent
    assert "config/example.yml" in sent
    for unwanted in (".git", "tests/", ".mypy_cache", "__pycache__", ".egg-info", "deploy/"):
        assert not [p for p in sent if unwanted in p], f"{unwanted} is sent in the build context"


def test_installed_entrypoint_prints_the_version(image: Image, stages: dict[str, Stage]) -> None:
    entrypoint = stages["runtime"].one("ENTRYPOINT").exec_form()
    resolved = shutil.which(entrypoint[0], path=image.env["PATH"])
    assert resolved is not None
    assert Path(resolved).parent == image.bin_dir, "ENTRYPOINT resolves to the installed wheel"
    done = subprocess.run(
        [resolved, "--version"],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=image.root.root,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"smtp-probe \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_installed_metadata_has_the_version_and_readme(image: Image) -> None:
    done = subprocess.run(
        [
            "python",
            "-c",
            "import importlib.metadata as m; d = m.metadata('smtp-probe'); "
            "print(d['Version']); print(d.get_payload())",
        ],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=image.root.root,
    )
    assert done.returncode == 0, done.stderr
    version, _, description = done.stdout.partition("\n")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert version == project["version"]
    readme = (REPO / project["readme"]).read_text(encoding="utf-8")
    assert description.strip() == readme.strip(), "the build stage must COPY the README"


def test_installed_wheel_carries_the_demo_config(image: Image) -> None:
    done = subprocess.run(
        [
            "python",
            "-c",
            "import smtp_probe; from smtp_probe.demo import demo_config; "
            "print(smtp_probe.__file__); print(len(demo_config().probes))",
        ],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=image.root.root,
    )
    assert done.returncode == 0, done.stderr
    module_file, probes = done.stdout.split()
    assert Path(module_file).is_relative_to(image.bin_dir.parent), "imported from the install"
    assert int(probes) >= 1


def test_example_config_is_in_the_image(image: Image) -> None:
    assert image.root.host("/etc/smtp-probe/config.example.yml").is_file()


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


def _entrypoint_cmd(image: Image, stages: dict[str, Stage], *args: str) -> list[str]:
    runtime = stages["runtime"]
    entrypoint = runtime.one("ENTRYPOINT").exec_form()
    resolved = shutil.which(entrypoint[0], path=image.env["PATH"])
    assert resolved is not None
    cmd = list(args) or runtime.one("CMD").exec_form()
    # Container paths (the config) are inside the replayed runtime root.
    return [
        resolved,
        *entrypoint[1:],
        *(str(image.root.host(a)) if a.startswith("/") else a for a in cmd),
    ]


def test_validate_accepts_a_config_and_rejects_a_broken_one(
    image: Image, stages: dict[str, Stage]
) -> None:
    config = image.root.host(CONFIG_PATH)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(_closed_port_config(free_port()), encoding="utf-8")
    argv = _entrypoint_cmd(image, stages, "validate", "--config", CONFIG_PATH)
    done = subprocess.run(
        argv, env=image.env, capture_output=True, text=True, timeout=60, cwd=image.root.root
    )
    assert done.returncode == 0, done.stderr
    assert "valid: 1 probe(s)" in done.stdout

    broken = config.with_name("broken.yml")
    broken.write_text("probes: []\nbogus: 1\n", encoding="utf-8")
    argv = _entrypoint_cmd(image, stages, "validate", "--config", "/etc/smtp-probe/broken.yml")
    done = subprocess.run(
        argv, env=image.env, capture_output=True, text=True, timeout=60, cwd=image.root.root
    )
    assert done.returncode == 3
    assert "bogus" in done.stderr


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - 127.0.0.1 only
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _healthcheck(
    image: Image, stages: dict[str, Stage], port: int
) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command, unchanged, with the URL env var pointing at ``port``."""
    healthcheck = stages["runtime"].one("HEALTHCHECK")
    argv = json.loads(healthcheck.args.partition(" CMD ")[2])
    env = dict(image.env)
    env[HEALTHCHECK_URL_ENV] = f"http://127.0.0.1:{port}/-/healthy"
    # A proxy in the environment must not be used for the container's own port.
    env["http_proxy"] = env["HTTP_PROXY"] = f"http://127.0.0.1:{free_port()}"
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    python = shutil.which(argv[0], path=env["PATH"])
    assert python is not None
    assert Path(python).parent == image.bin_dir, "the healthcheck runs the image's python"
    return subprocess.run(
        [python, *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        cwd=image.root.root,
    )


def test_cmd_runs_the_daemon_the_healthcheck_passes_and_sigterm_stops_it(
    image: Image, stages: dict[str, Stage], tmp_path: Path
) -> None:
    port = free_port()
    config = image.root.host(CONFIG_PATH)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(_closed_port_config(port), encoding="utf-8")
    argv = _entrypoint_cmd(image, stages)  # ENTRYPOINT + CMD, as `docker run IMAGE` does
    assert argv[1:] == ["run", "--config", str(config)]
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv, env=image.env, stdout=sink, stderr=subprocess.STDOUT, cwd=image.root.root
        )
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/-/healthy")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, f"daemon not healthy:\n{log.read_text(errors='replace')}"

        checked = _healthcheck(image, stages, port)
        assert checked.returncode == 0, checked.stderr
        assert _get(f"http://127.0.0.1:{port}/-/ready")[0] == 200

        # The installed daemon really schedules: the probe runs and fails at connect.
        wanted = 'smtp_probe_failures_total{probe="closed-port",stage="connect"}'
        metrics = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
            if any(
                line.startswith(wanted) and not line.endswith(" 0.0")
                for line in metrics.splitlines()
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no failed run at connect in the metrics:\n{metrics[-2000:]}")

        stop_signal = getattr(signal, stages["runtime"].one("STOPSIGNAL").args)
        started = time.monotonic()
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=35) == 0, log.read_text(errors="replace")
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    down = _healthcheck(image, stages, port)
    assert down.returncode != 0, "the healthcheck must fail when nothing serves"


def test_replay_timings(image: Image) -> None:
    # Recorded for the report; bounds keep the suite within its budget.
    for step, seconds in image.timings.items():
        print(f"{step}: {seconds:.1f}s")
    assert sum(image.timings.values()) < 240
