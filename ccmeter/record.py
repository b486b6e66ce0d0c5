"""``Record``: an immutable value class, declared like a dataclass, as cheap to define as a
plain class.

The reading commands (``report``, ``sessions``, ``caps``, ``watch --once``) answer in a few
tens of milliseconds, and defining the records of the modules they import is part of that: a
dataclass compiles its ``__init__``, ``__repr__`` and ``__eq__`` through ``exec`` (~0.35 ms
each here, after ~6 ms importing ``dataclasses`` and ``inspect``), a ``typing.NamedTuple``
``eval``s its ``__new__`` and compiles each string annotation (the process's first
``compile()`` ~1 ms, then ~0.1 ms a class). A ``Record`` reads its fields' names from the
class's annotations without evaluating them, and one ``__init__`` serves every record, so a
record class costs what a plain class costs (see docs/performance.md).

    class Cap(Record):
        name: str
        scope: str = "global"

Instances are immutable, equal when of the same class with equal fields (and hash so),
print as ``Cap(name='daily', scope='global')``, and ``cap._replace(scope=...)`` is a changed
copy. Type checkers read the fields as a frozen dataclass's (:pep:`681`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self, dataclass_transform


@dataclass_transform(frozen_default=True)
class Record:
    """Fields are the class's own annotations, in order; an assigned value is the default."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the class's own annotations, unevaluated (inspect.get_annotations: ~4 ms to import)
        annotations = cls.__dict__.get("__annotations__")  # noqa: RUF063
        if annotations is None and "__annotate__" in cls.__dict__:  # Python 3.14 (PEP 649)
            annotations = cls.__annotations__
        annotations = annotations or {}
        cls._fields = tuple(name for name, kind in annotations.items()
                            if not str(kind).removeprefix("typing.").startswith("ClassVar"))
        cls._defaults = {name: cls.__dict__[name] for name in cls._fields
                         if name in cls.__dict__}
        first_default = next((i for i, name in enumerate(cls._fields)
                              if name in cls._defaults), len(cls._fields))
        late = [name for name in cls._fields[first_default:] if name not in cls._defaults]
        if late:
            raise TypeError(f"{cls.__name__}: field {late[0]!r} without a default follows "
                            "one with a default")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, "
                            f"{len(args)} given")
        values = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected argument {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}() got {name!r} twice")
            values[name] = value
        if len(values) < len(fields):
            for name in fields:
                if name not in values:
                    if name not in self._defaults:
                        raise TypeError(f"{type(self).__name__}() missing {name!r}")
                    values[name] = self._defaults[name]
        object.__setattr__(self, "__dict__", values)

    @classmethod
    def _make(cls, values: tuple[Any, ...]) -> Self:
        """An instance from every field's value in order, without ``__init__``'s checks
        (for code that builds many: the waste accounting)."""
        fields = cls._fields
        if len(values) != len(fields):
            raise TypeError(f"{cls.__name__}._make() takes {len(fields)} values, "
                            f"{len(values)} given")
        record = object.__new__(cls)
        object.__setattr__(record, "__dict__", dict(zip(fields, values)))  # noqa: B905
        return record

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[name] for name in self._fields)

    def _replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (as ``dataclasses.replace``)."""
        return type(self)(**{**self.__dict__, **changes})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={self.__dict__[name]!r}" for name in self._fields)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")
