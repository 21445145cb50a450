"""``token_command``: real helper programs (small shell and Python scripts) that print a token.

What a helper prints or does (hang, crash, print garbage or a secret on
failure) decides the outcome; the reason says what happened and never
quotes the output.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from smtp_probe.oauth import token_source
from smtp_probe.oauth.providers import fetch_token
from smtp_probe.oauth.settings import CommandClient, OAuthClient
from smtp_probe.probe.credentials import TokenError

CANARY = "canary-printed-secret-5d1e"


def command(*argv: str, lifetime: float = 300.0, timeout: float = 5.0) -> OAuthClient:
    return OAuthClient("helper", CommandClient(tuple(argv), lifetime=lifetime), timeout=timeout)


def sh(script: str, **kwargs: float) -> OAuthClient:
    return command("sh", "-c", script, **kwargs)


def python(code: str, **kwargs: float) -> OAuthClient:
    return command(sys.executable, "-c", code, **kwargs)


def failure(client: OAuthClient) -> TokenError:
    with pytest.raises(TokenError) as caught:
        fetch_token(client, 5)
    error = caught.value
    assert CANARY not in f"{error.reason}{error!r}{error.args}"
    return error


def jwt(claims: dict[str, object]) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_plain_token_line_lives_for_the_configured_lifetime() -> None:
    fetched = fetch_token(sh("echo ya29.plain-token_value", lifetime=120), 5)

    assert fetched.value.reveal() == "ya29.plain-token_value"
    assert fetched.expires_at == pytest.approx(time.time() + 120, abs=2)


def test_a_bare_jwt_expires_at_its_exp_claim() -> None:
    token = jwt({"sub": "probe@example.test", "exp": 2_000_000_000})

    fetched = fetch_token(sh(f"printf '%s\\n' '{token}'"), 5)

    assert (fetched.value.reveal(), fetched.expires_at) == (token, 2_000_000_000)


@pytest.mark.parametrize(
    ("document", "expires_in"),
    [
        ({"access_token": "tok-1", "expires_in": 90}, 90),
        ({"access_token": "tok-1", "expires_at": "EPOCH"}, 45),
        # az account get-access-token
        ({"accessToken": "tok-1", "expires_on": "EPOCH", "tokenType": "Bearer"}, 45),
        ({"access_token": "tok-1"}, 300),
    ],
)
def test_json_output_names_the_token_and_its_expiry(
    tmp_path: Path, document: dict[str, object], expires_in: float
) -> None:
    epoch = int(time.time()) + 45
    text = json.dumps(document)
    # az prints expires_on as a string of digits; the others are numbers
    text = text.replace("EPOCH" if "expires_on" in document else '"EPOCH"', str(epoch))
    (tmp_path / "out.json").write_text(text)

    fetched = fetch_token(command("cat", str(tmp_path / "out.json")), 5)

    assert fetched.value.reveal() == "tok-1"
    assert fetched.expires_at == pytest.approx(time.time() + expires_in, abs=2)


def test_a_failing_command_reports_its_status_and_not_what_it_printed() -> None:
    error = failure(sh(f"echo {CANARY}; echo {CANARY} >&2; exit 3"))

    assert (error.result, error.reason) == (
        "command_failed",
        "token command sh: exited with status 3 (its output is not shown)",
    )


def test_a_command_killed_by_a_signal_says_which() -> None:
    error = failure(sh(f"echo {CANARY}; kill -9 $$"))

    assert error.reason == "token command sh: killed by SIGKILL (its output is not shown)"


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("true", "printed nothing"),
        ("printf '  \\n\\n'", "printed nothing"),
        (f"echo Password: {CANARY}", "printed something that is not a bearer token"),
        (
            f"echo warning; echo {CANARY}",
            "printed 2 lines; expected one line with the token, or JSON",
        ),
        (f'echo \'{{"token": "{CANARY}"}}\'', "printed JSON without a usable access_token"),
        (
            f"echo '{{\"access_token\": {CANARY}'",
            "printed something that is neither a token nor JSON",
        ),
        ("printf '\\377\\376'", "printed something that is not UTF-8 text, not a token"),
    ],
)
def test_garbage_output_is_refused_without_quoting_it(script: str, why: str) -> None:
    error = failure(sh(script))

    assert (error.result, error.reason) == ("command_failed", f"token command sh: {why}")


def test_a_missing_program_cannot_run() -> None:
    error = failure(command("/nonexistent/oauth2-helper", "--account", CANARY))

    assert error.reason == "token command oauth2-helper: cannot run it (No such file or directory)"


def test_a_hanging_command_is_killed_with_its_children_at_the_deadline(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {child_pid}; wait"
    cache = token_source(sh(script, timeout=1.0))
    started = time.monotonic()

    with pytest.raises(TokenError) as caught:
        cache.token(10)

    took = time.monotonic() - started
    assert caught.value.result == "timeout"
    assert 0.9 <= took < 3.0
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the helper's child outlived the deadline"


def test_stdin_is_closed() -> None:
    """A helper that prompts gets end-of-file at once instead of waiting for an answer."""
    code = "import sys; line = sys.stdin.readline(); print('tok-stdin' if line == '' else 'x y')"

    assert fetch_token(python(code), 5).value.reveal() == "tok-stdin"


def test_command_runs_without_a_shell(tmp_path: Path) -> None:
    """A command line given as one string is one program name to a shell-less exec."""
    marker = tmp_path / "ran"
    error = failure(command(f"echo tok; touch {marker}"))

    assert error.reason.endswith("cannot run it (No such file or directory)")
    assert not marker.exists()


def test_arguments_reach_the_program_unsplit() -> None:
    code = "import sys; print('tok-' + '-'.join(str(len(a)) for a in sys.argv[1:]))"

    assert fetch_token(command(sys.executable, "-c", code, "a b", "$HOME"), 5).value.reveal() == (
        "tok-3-5"
    )
