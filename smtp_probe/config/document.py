"""The YAML layer: text -> plain data (dicts, lists, scalars) plus where each value was written.

The schema validates plain data; this module remembers the position of
every key and value so each error can name ``LINE:COL``. It also reports
what plain data cannot show and PyYAML would hide:

* a key written twice in one mapping is an error (PyYAML keeps the last);
* merge keys (``<<: *anchor``, or a list of anchors) are applied, earlier
  sources winning, and the mapping's own keys override merged ones;
* keys must be non-empty strings;
* a scalar PyYAML cannot construct (an unknown or mismatched ``!tag``) is
  reported here and stands in the data as :class:`Unreadable`, so the
  schema does not report it a second time.

Problems with the file as a whole (YAML syntax, a control character, more
than one document, nesting too deep) raise one located
:class:`~smtp_probe.config.errors.ConfigError` without quoting the text:
the offending line may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from smtp_probe.config.errors import Loc, Problems
from smtp_probe.config.values import kind_of

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_NO_POSITION: Final = (0, 0)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A scalar PyYAML could not construct; its problem is reported already."""

    reason: str


@dataclass(slots=True)
class Document:
    """One YAML document as plain data, with the position of each key and value."""

    data: object
    """The root value: usually a dict of sections."""
    problems: Problems
    """Where every problem with this document is recorded, this layer's first."""
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    """0-based ``(line, column)`` where the value at each location starts."""
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    """Where the key of each mapping entry is written."""
    reported: set[Loc] = field(default_factory=set)
    """Locations whose value this layer already reported (not constructible)."""

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """Where ``loc`` is written: its key (``key=True``) or value, else its nearest parent."""
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            found = self.values.get(loc[:end])
            if found is not None:
                return found
        return _NO_POSITION

    def already_reported(self, loc: Loc) -> bool:
        """Whether this layer reported ``loc`` or a value containing it."""
        return any(loc[:end] in self.reported for end in range(len(loc) + 1))


def compose(text: str, problems: Problems) -> Document | None:
    """Read ``text`` into a :class:`Document`; ``None`` when it holds no document at all.

    Problems inside the document go to ``problems``.

    Raises:
        ConfigError: the text is not one well-formed YAML document.
    """
    root = _compose(text, problems)
    if root is None:
        return None
    builder = _Builder(problems)
    try:
        data = builder.build(root, ())
    except RecursionError:
        raise problems.whole_file("invalid YAML: nested too deeply") from None
    finally:
        builder.loader.dispose()
    return Document(data, problems, builder.values, builder.keys, builder.reported)


def _compose(text: str, problems: Problems) -> Node | None:
    """Parse ``text`` into a node tree; any YAML error is one located ConfigError."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node: Node | None = loader.get_single_node()
        return node
    except yaml.MarkedYAMLError as exc:
        # Only problem and context: str(exc) would quote the offending
        # line, and that line may hold a password.
        # PyYAML's order: "while parsing X started at L:C: expected Y".
        message = exc.problem or "invalid YAML"
        if exc.context:
            where = exc.context_mark
            started = (
                f" started at line {where.line + 1}, column {where.column + 1}"
                if where is not None and where != exc.problem_mark
                else ""
            )
            message = f"{exc.context}{started}: {message}"
        mark = exc.problem_mark or exc.context_mark
        raise problems.whole_file(
            f"invalid YAML: {message}", (mark.line, mark.column) if mark is not None else None
        ) from None
    except yaml.reader.ReaderError as exc:  # a control character in the text
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        raise problems.whole_file(
            f"invalid YAML: character #x{exc.character:04x} is not allowed", (line, column)
        ) from None
    except yaml.YAMLError as exc:
        raise problems.whole_file(f"invalid YAML: {type(exc).__name__}") from None
    except RecursionError:
        raise problems.whole_file("invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _position(node: Node) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line, mark.column) if mark is not None else _NO_POSITION


class _Builder:
    """Turns a node tree into plain data, recording positions and problems on the way."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.loader = yaml.SafeLoader("")
        self.values: dict[Loc, tuple[int, int]] = {}
        self.keys: dict[Loc, tuple[int, int]] = {}
        self.reported: set[Loc] = set()
        # An anchor used twice is built once: aliases cannot blow up the data
        # ("billion laughs"), and its problems are reported once.
        self._built: dict[int, object] = {}
        self._building: set[int] = set()

    def error(self, node: Node, loc: Loc, message: str) -> None:
        self.problems.add(_position(node), loc, message)

    def build(self, node: Node, loc: Loc) -> object:
        """The plain value of ``node``, which stands at ``loc``."""
        self.values[loc] = _position(node)
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self._built:
            return self._built[id(node)]
        if id(node) in self._building:
            self.error(node, loc, "an alias cannot refer to the value that contains it")
            self.reported.add(loc)
            return Unreadable("recursive alias")
        self._building.add(id(node))
        try:
            value: object
            if isinstance(node, SequenceNode):
                value = [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
            elif isinstance(node, MappingNode):
                value = self._mapping(node, loc)
            else:  # pragma: no cover - PyYAML has no other node kinds
                value = Unreadable("unknown node")
        finally:
            self._building.discard(id(node))
        self._built[id(node)] = value
        return value

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, object]:
        mapping: dict[str, object] = {}
        for key_node, value_node in self._pairs(node, loc, frozenset()):
            key = self._key(key_node, loc)
            if key is None:
                continue
            self.keys[(*loc, key)] = _position(key_node)
            mapping[key] = self.build(value_node, (*loc, key))
        return mapping

    def _pairs(self, node: MappingNode, loc: Loc, seen: frozenset[int]) -> list[tuple[Node, Node]]:
        """The key/value pairs of a mapping with ``<<`` merges applied, later keys winning.

        Duplicate keys written in one mapping are errors (PyYAML silently
        keeps the last); keys brought in by a merge may be overridden.
        """
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        written: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                # Earlier sources win, so add them last.
                for source in reversed(sources):
                    if not isinstance(source, MappingNode) or source is node or id(source) in seen:
                        self.error(source, loc, "'<<' must merge a mapping or a list of them")
                        continue
                    merged.extend(self._pairs(source, loc, seen | {id(node)}))
                continue
            if isinstance(key_node, ScalarNode):
                key = key_node.value
                if isinstance(key, str) and key in written:
                    self.error(key_node, (*loc, key), "duplicate key")
                written.add(key)
            own.append((key_node, value_node))
        return merged + own

    def _key(self, node: Node, loc: Loc) -> str | None:
        if isinstance(node, ScalarNode):
            key = self._construct(node)
            if isinstance(key, Unreadable):
                self.error(node, loc, key.reason)
                return None
            if isinstance(key, str) and key:
                return key
            kind = kind_of(key)
        else:
            kind = "a list" if isinstance(node, SequenceNode) else "a mapping"
        self.error(node, loc, f"keys must be non-empty strings, got {kind}")
        return None

    def _scalar(self, node: ScalarNode, loc: Loc) -> object:
        """The value of a scalar at ``loc``; if it has none, the problem is reported here."""
        value = self._construct(node)
        if isinstance(value, Unreadable):
            self.error(node, loc, value.reason)
            self.reported.add(loc)
        return value

    def _construct(self, node: ScalarNode) -> object:
        """The value of a scalar as ``yaml.safe_load`` gives it, or why it has none."""
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            reason = exc.problem or f"cannot read this value as {node.tag}"
        except Exception:  # noqa: BLE001 - PyYAML's constructors raise anything on "!!int x"
            reason = f"cannot read this value as {node.tag}"
        self.loader.recursive_objects.clear()
        return Unreadable(reason)
