"""Pydantic's validation errors -> located messages of our own, never quoting a value.

Pydantic puts the offending input into each error (``input_value``) and
its own wording is about Python types. Every error is rewritten here from
its type and location: the message names what the key wants and the kind
of value found ("expected a mapping, got a list"); the location comes from
the YAML node (see :mod:`smtp_probe.config.document`). Messages of the
schema's own checks (:class:`~smtp_probe.config.model.Value`) are ours
already and pass through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from smtp_probe.config import tree
from smtp_probe.config.document import Document
from smtp_probe.config.errors import Loc
from smtp_probe.config.model import ERROR_TYPE
from smtp_probe.config.values import closest, kind_of

_MAPPING_TYPES: Final = frozenset({"dict_type", "model_type", "model_attributes_type"})
_LIST_TYPES: Final = frozenset({"list_type", "tuple_type", "iterable_type", "sequence_str"})


def report(exc: ValidationError, document: Document) -> None:
    """Add each error of ``exc`` to the document's problems, at the node it is about.

    Unknown keys come first among errors at one position: a misspelt key is
    the cause of the "required key is missing" next to it.
    """
    errors = exc.errors(include_url=False, include_context=False, include_input=True)
    errors.sort(key=lambda error: error["type"] != "extra_forbidden")
    for error in errors:
        loc = _in_document(error["loc"], document.data)
        if document.already_reported(loc):
            continue
        if error["type"] == "missing":
            document.problems.add(document.position(loc[:-1]), loc, "required key is missing")
        elif error["type"] == "extra_forbidden":
            document.problems.add(document.position(loc, key=True), loc, _unknown_key(loc))
        else:
            document.problems.add(document.position(loc), loc, _message(error, loc))


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    if kind == ERROR_TYPE:
        return error["msg"]
    found = kind_of(error.get("input"))
    if kind in _MAPPING_TYPES:
        return f"expected a mapping, got {found}"
    if kind in _LIST_TYPES:
        return f"expected {tree.describe(tree.type_at(loc))}, got {found}"
    # A check the schema does not use today; pydantic's wording may hold the value.
    return f"is not valid here ({kind})"


def _unknown_key(loc: Loc) -> str:
    model = tree.type_at(loc[:-1])
    if not tree.is_model(model):  # pragma: no cover - every closed mapping is a model
        return "unknown key"
    allowed = list(tree.fields(model))
    key = loc[-1]
    suggestion = closest(key, allowed) if isinstance(key, str) else None
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown key{hint}; allowed keys: {', '.join(allowed)}"


def _in_document(loc: Sequence[str | int], data: object) -> Loc:
    """``loc`` without the tags pydantic adds for unions and validators.

    Every part that is a key or index of the data is kept; so is a last
    part naming a key that is not there (a missing key). Anything else is a
    tag.
    """
    kept: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        key = isinstance(node, dict) and isinstance(part, str) and part in node
        index = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if key or index:
            node = node[part]  # type: ignore[index]
        elif not (position == len(loc) - 1 and isinstance(node, dict)):
            continue
        kept.append(part)
    return tuple(kept)
