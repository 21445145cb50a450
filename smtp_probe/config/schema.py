"""The JSON Schema of the config file, generated from the models, for editors and CI.

``smtp-probe config-schema`` prints it; ``config/smtp-probe.schema.json``
is the committed copy that config files name in their first line
(``# yaml-language-server: $schema=smtp-probe.schema.json``), and a test
fails when it is stale. Output is deterministic: same models, same bytes.
"""

from __future__ import annotations

import json
from typing import Any, Final

from smtp_probe.config.model import ConfigFile

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
TITLE: Final = "smtp-probe configuration"
REGENERATE: Final = "smtp-probe config-schema > config/smtp-probe.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, as a dict."""
    generated = ConfigFile.model_json_schema(by_alias=True, mode="validation")
    tidy = _tidy(generated)
    return {"$schema": DIALECT, **tidy, "title": TITLE}


def schema_text() -> str:
    """The JSON Schema as the committed file holds it: indented by 2, ending in a newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _tidy(node: Any, *, is_property: bool = False) -> Any:
    """Drop what helps no editor: titles pydantic derives from key names, ``default: null``."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    tidy: dict[str, Any] = {}
    for key, value in node.items():
        if (key == "default" and value is None) or (key == "title" and is_property):
            continue
        if key in ("properties", "$defs"):
            tidy[key] = {
                name: _tidy(schema, is_property=key == "properties")
                for name, schema in value.items()
            }
        else:
            tidy[key] = _tidy(value)
    return tidy
