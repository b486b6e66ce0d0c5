"""``Record`` behaves as the frozen dataclass it stands in for."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import ClassVar

import pytest

from ccmeter.record import Record


class Cap(Record):
    """A cap (a docstring, a method and a property, as records have)."""

    KINDS: ClassVar[tuple[str, ...]] = ("global", "project")  # not a field
    name: str
    limit: int
    scope: str = "global"
    note: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.scope}"

    def doubled(self) -> Cap:
        return self._replace(limit=self.limit * 2)


@dataclass(frozen=True)
class DataCap:
    name: str
    limit: int
    scope: str = "global"
    note: str | None = None


def test_fields_defaults_and_arguments_as_a_dataclass_takes_them():
    assert Cap._fields == ("name", "limit", "scope", "note")
    for args, kwargs in [(("daily", 5), {}), (("daily",), {"limit": 5, "note": "x"}),
                         ((), {"scope": "project:web", "limit": 5, "name": "daily"}),
                         (("daily", 5, "per_session", None), {})]:
        ours, theirs = Cap(*args, **kwargs), DataCap(*args, **kwargs)
        assert [getattr(ours, f) for f in Cap._fields] == [
            getattr(theirs, f) for f in Cap._fields]
        assert repr(ours) == repr(theirs).replace("DataCap", "Cap")
    for args, kwargs in [((), {"name": "daily"}), (("a", 1, "b", "c", "d"), {}),
                         (("a", 1), {"name": "b"}), (("a", 1), {"colour": "red"})]:
        with pytest.raises(TypeError):
            Cap(*args, **kwargs)
        with pytest.raises(TypeError):
            DataCap(*args, **kwargs)


def test_equal_by_value_and_class_hashable_immutable():
    cap = Cap("daily", 5)
    assert cap == Cap("daily", 5, "global") and hash(cap) == hash(Cap("daily", 5))
    assert cap != Cap("daily", 6) and cap != ("daily", 5, "global", None)
    assert cap != DataCap("daily", 5)
    assert len({cap, Cap("daily", 5), Cap("weekly", 5)}) == 2
    for attempt in (lambda: setattr(cap, "limit", 7), lambda: delattr(cap, "limit"),
                    lambda: setattr(cap, "other", 1)):
        with pytest.raises(AttributeError):
            attempt()
    assert cap.limit == 5


def test_replace_methods_properties_and_pickle():
    cap = Cap("daily", 5, note="n")
    assert cap._replace(scope="project:web") == Cap("daily", 5, "project:web", "n")
    assert cap.doubled().limit == 10 and cap.limit == 5
    assert cap.label == "daily global"
    with pytest.raises(TypeError):
        cap._replace(colour="red")
    assert pickle.loads(pickle.dumps(cap)) == cap


def test_a_field_without_a_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="without a default"):
        class Bad(Record):
            a: int = 0
            b: int
