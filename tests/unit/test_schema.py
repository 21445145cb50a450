"""The JSON Schema for editors: generated from the models, committed, and true to the loader."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from smtp_probe.config.schema import REGENERATE, json_schema, schema_text

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "config" / "smtp-probe.schema.json"
BAD = Path(__file__).resolve().parent / "configs" / "bad"
EDITOR_LINE = "# yaml-language-server: $schema=smtp-probe.schema.json\n"


def shipped_configs() -> dict[str, Any]:
    """Every config file the project ships, by name: config/, the tests' good one, deploy/."""
    configs = {
        str(path.relative_to(REPO)): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in [
            *sorted((REPO / "config").glob("*.yml")),
            Path(__file__).parent / "configs" / "good.yml",
        ]
    }
    configmap = REPO / "deploy" / "kubernetes" / "configmap.yaml"
    for document in yaml.safe_load_all(configmap.read_text(encoding="utf-8")):
        for key, text in document.get("data", {}).items():
            configs[f"{configmap.relative_to(REPO)}:{key}"] = yaml.safe_load(text)
    return configs


@functools.cache
def validator() -> Any:
    """The committed schema's validator, checked against its metaschema once per session.

    Built once: checking the schema against the 2020-12 metaschema took about
    0.3 s per test, and the validator keeps no state between ``iter_errors`` calls.
    """
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_committed_schema_is_what_the_models_generate() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(), (
        f"{COMMITTED.relative_to(REPO)} is stale; regenerate it: {REGENERATE}"
    )


def test_the_schema_text_is_deterministic_json_indented_by_two() -> None:
    text = schema_text()
    assert text == schema_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_example_and_demo_configs_name_the_schema_for_editors() -> None:
    for name in ("example.yml", "demo.yml"):
        text = (REPO / "config" / name).read_text(encoding="utf-8")
        assert text.startswith(EDITOR_LINE), name


def test_there_is_one_demo_config_and_the_package_ships_it() -> None:
    """smtp_probe/demo.yml is a link to config/demo.yml, not a copy that can drift."""
    packaged = REPO / "smtp_probe" / "demo.yml"
    assert packaged.is_symlink()
    assert packaged.resolve() == (REPO / "config" / "demo.yml").resolve()
    assert not (REPO / "config" / "demo.yml").is_symlink()


def test_every_shipped_config_is_valid_by_the_schema() -> None:
    configs = shipped_configs()
    assert len(configs) >= 4
    check = validator()
    for name, config in configs.items():
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(config)]
        assert problems == [], name


@pytest.mark.parametrize(
    "stem",
    [
        "unknown_top_key",
        "unknown_server_key",
        "server_unknown_key",
        "port_not_a_number",
        "port_out_of_range",
        "tls_unknown",
        "verify_string",
        "idle_not_boolean",
        "duration_without_unit",
        "duration_zero",
        "host_with_port",
        "probe_bad_address",
        "probe_bad_name",
        "probe_missing_to",
        "probes_empty",
        "probes_not_a_list",
        "listen_bad",
        "junk_folders_not_a_list",
        "section_wrong_type",
        "password_and_password_file",
        "password_without_username",
        "username_without_password",
        "mailbox_missing_password",
        "mailbox_missing_username",
        "oauth_client_secret_and_file",
        "oauth_provider_unknown",
        "oauth_key_of_another_provider",
        "oauth_microsoft_incomplete",
        "oauth_google_installed_app_incomplete",
        "oauth_google_service_account_without_subject",
        "oauth_generic_grant_needs",
        "oauth_generic_http_token_url",
        "oauth_command_and_provider",
        "oauth_command_bad",
        "oauth_and_password",
        "preset_unknown",
        "cleanup_unknown",
        "reflector_without_mailbox",
        "expect_auth_bad",
        "policy_check_unknown",
        "policy_expect_bad",
        "policy_expect_not_with_check",
        "policy_check_needs",
        "route_incomplete",
        "routes_empty",
    ],
)
def test_bad_configs_fail_the_schema_too(stem: str) -> None:
    """The schema is not vacuous: what an editor can see is wrong, it flags."""
    config = yaml.safe_load((BAD / f"{stem}.yml").read_text(encoding="utf-8"))
    assert list(validator().iter_errors(config)), stem


def _properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {f"/{key}": value for key, value in schema["properties"].items()}
    for model, definition in schema["$defs"].items():
        found.update({f"{model}/{key}": value for key, value in definition["properties"].items()})
    return found


def test_every_key_has_help_for_editors() -> None:
    undocumented = [
        name for name, value in _properties(json_schema()).items() if not value.get("description")
    ]
    assert undocumented == []


def test_value_types_are_spelt_out() -> None:
    properties = _properties(json_schema())
    assert properties["SmtpServer/port"] == {
        "description": properties["SmtpServer/port"]["description"],
        "maximum": 65535,
        "minimum": 1,
        "type": "integer",
    }
    assert properties["SmtpServer/tls"]["enum"] == ["none", "starttls", "tls", "opportunistic"]
    assert properties["Mailbox/tls"]["enum"] == ["none", "starttls", "tls"]
    assert properties["SmtpServer/tls"]["default"] == "starttls"
    assert properties["Defaults/interval"]["type"] == "string"
    assert properties["Defaults/interval"]["default"] == "60s"
    assert "pattern" in properties["Probe/interval"]
    assert "pattern" in properties["Probe/from"]
    assert "pattern" in properties["Probe/to"]
    assert properties["Server/listen"]["default"] == ":10587"
    assert "required" not in json_schema(), "probes may come from routes alone"


@pytest.mark.parametrize(
    ("config", "valid"),
    [
        ({}, False),
        ({"probes": []}, False),
        ({"routes": {}}, False),
        ({"probes": [{"name": "p", "smtp": "s", "from": "a@b", "to": "c@d"}]}, True),
        (
            {"routes": {"r": {"senders": [{"smtp": "s", "from": "a@b"}],
                              "mailboxes": [{"mailbox": "m", "to": "c@d"}]}}},
            True,
        ),
    ],
)  # fmt: skip
def test_the_schema_wants_a_probe_written_or_made_by_a_route(
    config: dict[str, Any], valid: bool
) -> None:
    errors = [error.message for error in validator().iter_errors(config)]
    assert (errors == []) == valid, errors
