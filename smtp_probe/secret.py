"""A string that refuses to show itself: passwords and token secrets."""

from __future__ import annotations

from typing import Final

_MASK: Final = "<secret>"


class Secret:
    """Wrap a secret value so that ``repr``, ``str`` and f-strings never reveal it.

    The only way to the value is :meth:`reveal`, which makes every use of a
    password greppable. Equality compares values so configs can be diffed on
    reload without printing them.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself; call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # Pickling is allowed (copy/deepcopy of frozen configs); printing is not.
        return (Secret, (self._value,))
