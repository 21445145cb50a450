"""The models' shape laid over the YAML data: which model reads which mapping, and what a key wants.

Pydantic reports an error's location but not the model it happened in;
messages need that (the keys a mapping allows, what a list holds), and each
model's rules need the raw mappings it reads. Both come from walking the
field annotations of :class:`~smtp_probe.config.model.ConfigFile`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from smtp_probe.config.errors import Loc
from smtp_probe.config.model import ConfigFile, Section


def mappings(data: object) -> Iterator[tuple[Loc, type[Section], dict[str, object]]]:
    """Every mapping of the document that a model reads, with its location and model."""
    yield from _walk(ConfigFile, data, ())


def type_at(loc: Loc) -> Any:
    """The annotation of the value at ``loc`` (``None`` unless the schema has that place)."""
    annotation: Any = ConfigFile
    for part in loc:
        annotation = _unwrap(annotation)
        if is_model(annotation):
            annotation = fields(annotation).get(part) if isinstance(part, str) else None
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is tuple:
            annotation = typing.get_args(annotation)[0]
        else:
            return None
        if annotation is None:
            return None
    return _unwrap(annotation)


def fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's keys as the file writes them (aliases), with their annotations."""
    return {info.alias or name: info.annotation for name, info in model.model_fields.items()}


def describe(annotation: Any) -> str:
    """What a list or mapping at some place should be, for "expected ..., got ..."."""
    if typing.get_origin(annotation) is tuple:
        item = _unwrap(typing.get_args(annotation)[0])
        return f"a list of {item.plural}" if is_model(item) else "a list"
    return "a mapping"


def _walk(
    annotation: Any, value: object, loc: Loc
) -> Iterator[tuple[Loc, type[Section], dict[str, object]]]:
    annotation = _unwrap(annotation)
    if is_model(annotation) and isinstance(value, dict):
        yield loc, annotation, value
        for key, field in fields(annotation).items():
            if key in value:
                yield from _walk(field, value[key], (*loc, key))
    elif typing.get_origin(annotation) is dict and isinstance(value, dict):
        item = typing.get_args(annotation)[1]
        for key, element in value.items():
            yield from _walk(item, element, (*loc, key))
    elif typing.get_origin(annotation) is tuple and isinstance(value, list):
        item = typing.get_args(annotation)[0]
        for index, element in enumerate(value):
            yield from _walk(item, element, (*loc, index))


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``X | None`` and ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def is_model(annotation: Any) -> bool:
    """Whether ``annotation`` is one of the config's models."""
    return isinstance(annotation, type) and issubclass(annotation, Section)
