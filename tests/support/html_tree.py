"""A page as a tree of elements, parsed by the standard library, for asserting on structure.

Tests of the status page ask questions such as "which cells does this row's
strip have" or "is there a script element anywhere"; string searches answer
them badly. This builds the element tree with :class:`html.parser.HTMLParser`
(which tokenizes as a browser does: escaped text stays text) and offers
the few look-ups the tests need.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Final

_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Element:
    """One element: its tag, attributes, and children (elements and text, in order)."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        """The words of the ``class`` attribute."""
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        """All text inside, as a browser's ``textContent``."""
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Element]:
        """The element itself and every element inside it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, *, cls: str | None = None) -> list[Element]:
        """Elements inside (this one included) with ``tag`` and/or the class ``cls``."""
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
        ]

    def find(self, tag: str | None = None, *, cls: str | None = None) -> Element:
        """The first such element.

        Raises:
            AssertionError: there is none.
        """
        found = self.find_all(tag, cls=cls)
        assert found, f"no <{tag or '*'}> with class {cls!r}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self._open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self._open[-1].children.append(element)
        if tag not in _VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._open[-1].children.append(data)


def parse(page: str) -> Element:
    """The element tree of ``page`` under a ``#document`` root."""
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root
