"""A plain stand-in for a live ``nn.Module``: what a report keeps of a traced layer without its code.

Used wherever a report outlives (or never had) the user's module: a report made in a child process
(:mod:`resviz.core.session.isolation`) and a report read back from a run directory's ``report.json``
(:mod:`resviz.core.training.runreport`). :mod:`resviz.core.analysis.describe` reads the hyper-parameters
as attributes (``kernel_size``, ``stride``, ...); the Inspector reads ``class_source``.

:func:`plain_module` gives an instance of a subclass named like the module's class (so
``type(m).__name__`` reads as for the live module); it pickles by value (through
:func:`plain_module`), which the child's allow-list of resviz records accepts.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, type] = {}


class PlainModule:
    """A traced module's class name, where its class is defined (``'path/model.py:12'`` or ``''``)
    and its hyper-parameters (``attrs``, also readable as attributes). No code and no weights."""

    def __init__(self, type_name: str, class_source: str = "", attrs: dict | None = None):
        self.type_name = type_name
        self.class_source = class_source
        self.attrs = dict(attrs or {})

    def __getattr__(self, name: str) -> Any:  # only for names that are not real attributes
        attrs = self.__dict__.get("attrs")
        if attrs is not None and name in attrs:
            return attrs[name]
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlainModule):
            return NotImplemented
        mine = (self.type_name, self.class_source, self.attrs)
        return mine == (other.type_name, other.class_source, other.attrs)

    __hash__ = None  # mutable, compared by value

    def __reduce__(self):
        return plain_module, (self.type_name, self.class_source, self.attrs)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items())
        return f"{self.type_name}({items})"


def plain_module(type_name: str, class_source: str = "", attrs: dict | None = None) -> PlainModule:
    """A :class:`PlainModule` whose type is named ``type_name`` (``Layer`` when that is not an identifier)."""
    cls = _TYPES.get(type_name)
    if cls is None:
        ident = type_name if type_name.isidentifier() else "Layer"
        cls = _TYPES[type_name] = type(ident, (PlainModule,), {"__module__": __name__})
    return cls(type_name, class_source, attrs)
