"""One way to declare and check camwatch's data files: camwatch.toml, the indicator file, the covered-maker list
and the model file.

A section of a file is a dataclass. Each field that is a key in the file is declared with `setting()`, which puts
its kind (what values it takes), bounds, unit and a doc line next to its default; `load()` checks a parsed table
against the dataclass and returns an instance of it. So the keys, types, defaults and ranges of a file are stated
once, and a key added to the dataclass is at once accepted, checked and documented (`keys()` lists them).

A field declared without `setting()` is not read from the file: it is derived, by the section's optional
`after_load(where)` method, which runs once the keys are in and is also the place for rules that relate one key
to another. It returns the finished section (usually `dataclasses.replace(self, ...)`).

Every problem is an `Invalid`: one line naming the key by its path in the file (`flows.max_flows`,
`allow[2].dst`), never a traceback; the caller prefixes the file's name. A key the section does not declare is an
error (a typo in a security setting must not pass silently) unless the section sets `other_keys = True`, as the
model file does for the metadata it carries along.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import MISSING, FrozenInstanceError, dataclass
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

DAY = 86400.0
_SETTING = "camwatch.setting"   # the key of a field's metadata that holds its Setting


class Invalid(ValueError):
    """A value the file must not have. `key` and `expect` are set when the problem is a key's wrong value (so a
    caller can word it its own way), `missing` when a required key is absent."""

    def __init__(self, message: str, *, key: str = "", expect: str = "", missing: bool = False):
        super().__init__(message)
        self.key = key
        self.expect = expect
        self.missing = missing


class Kind:
    """What values a setting takes: `check` returns a value as the section stores it or raises Invalid;
    `describe` says what is wanted, for the error (`... must be <describe>`) and the reference."""

    # Kinds with parameters are plain classes, not frozen dataclasses: nothing compares, hashes or prints a kind,
    # and each frozen dataclass cost ~0.3 ms of every start to build its six methods (issue 16).
    __slots__ = ()

    def check(self, value: Any, s: Setting, key: str) -> Any:
        raise NotImplementedError

    def describe(self, s: Setting) -> str:
        raise NotImplementedError


class Values:
    """Equality, hashing and repr by field values, as a frozen dataclass generates them, for frozen dataclasses
    compared by value off the hot paths: the configuration's sections (the tests compare parsed and default
    configs) and records the tests compare. Written once here and inherited, where dataclass(eq=True, repr=True)
    would generate and compile the three for each class at import: ~1.3 M instructions of every start a class
    (issue 16). A subclass is a dataclass declared with frozen=True, eq=False, repr=False, so that it keeps these;
    reading the fields by name, they are slower per call than generated ones (tests/unit/test_cli_startup.py lists
    the dataclasses that keep those)."""

    __slots__ = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Values)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                          for f in dataclasses.fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{self.__class__.__qualname__}({shown})"


class Frozen:
    """The base of a record (below): its fields set once, by a constructor written once here for all of them.
    A frozen dataclass compiles an __init__, __setattr__ and __delattr__ for each class at import, ~0.26 ms a class:
    the configuration's sections, the reference files' records and Setting were ~8 ms of every start (issue 16),
    and each is made a few times a run, where a constructor that reads the fields' plan is fast enough. It takes
    what the generated one takes (positional fields in order, keyword-only ones by name, defaults and factories)
    and refuses what it refuses with a TypeError (tests/unit/test_schema.py holds the two to each other)."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        plan = _PLANS.get(cls) or _plan(cls)
        positional, fields = plan
        name = cls.__qualname__
        if len(args) > len(positional):
            raise TypeError(f"{name}.__init__() takes at most {len(positional)} positional arguments besides self, "
                            f"{len(args)} given")
        given = dict(zip(positional, args, strict=False))   # fewer arguments than positional fields: the rest default
        for key in kwargs:
            if key in given:
                raise TypeError(f"{name}.__init__() got multiple values for argument {key!r}")
            if key not in fields:
                raise TypeError(f"{name}.__init__() got an unexpected keyword argument {key!r}")
        given.update(kwargs)
        put = object.__setattr__
        for key, (default, factory) in fields.items():
            if key in given:
                put(self, key, given[key])
            elif default is not MISSING:
                put(self, key, default)
            elif factory is not MISSING:
                put(self, key, factory())
            else:
                kind = "positional" if key in positional else "keyword-only"
                raise TypeError(f"{name}.__init__() missing 1 required {kind} argument: {key!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


# per record class: its positional fields' names in order, and each field's (default, default_factory)
_PLANS: dict[type, tuple[tuple[str, ...], dict[str, tuple[Any, Any]]]] = {}


def _plan(cls: type) -> tuple[tuple[str, ...], dict[str, tuple[Any, Any]]]:
    fields = dataclasses.fields(cls)
    plan = (tuple(f.name for f in fields if not f.kw_only), {f.name: (f.default, f.default_factory) for f in fields})
    _PLANS[cls] = plan
    return plan


@dataclass_transform(frozen_default=True, eq_default=False, field_specifiers=(dataclasses.field,))
def record(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    """@dataclass(frozen=True, eq=False, repr=False) for a class deriving from Frozen, without the compiled methods:
    the same fields, dataclasses.fields and replace, and the same refusals of assignment."""
    def wrap(c: type[T]) -> type[T]:
        if not issubclass(c, Frozen):
            raise TypeError(f"{c.__qualname__}: a record derives from schema.Frozen")
        made = dataclass(c, init=False, eq=False, repr=False, kw_only=kw_only)
        # what Frozen's constructor does not do, refused at import rather than skipped at every construction
        if hasattr(made, "__post_init__") or not all(f.init for f in dataclasses.fields(made)):  # type: ignore[arg-type]
            raise TypeError(f"{c.__qualname__}: a record has no __post_init__ and no field outside its constructor")
        return made
    return wrap if cls is None else wrap(cls)


@record
class Setting(Frozen):
    """A key's declaration, kept in its dataclass field's metadata (the default stays the field's own)."""

    kind: Kind
    doc: str
    unit: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    expect: str = ""    # what a wrong value is told it must be, where the kind's own wording does not fit

    @property
    def wanted(self) -> str:
        return self.expect or self.kind.describe(self)

    def wrong(self, key: str, expect: str = "") -> Invalid:
        want = expect or self.wanted
        return Invalid(f"{key} must be {want}", key=key, expect=want)


def setting(default: Any = MISSING, *, kind: Kind, doc: str, default_factory: Callable[[], Any] | None = None,
            unit: str = "", minimum: int | float | None = None, maximum: int | float | None = None,
            expect: str = "") -> Any:
    """A dataclass field that is a key of the file. Without a default (or default_factory) the key is required."""
    metadata = {_SETTING: Setting(kind, doc, unit, minimum, maximum, expect)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(schema: type, doc: str) -> Any:
    """A field holding a sub-table, read as the section dataclass `schema`; absent, that section's defaults."""
    return setting(kind=Section(schema), default_factory=schema, doc=doc)


def settings(schema: type) -> tuple[tuple[dataclasses.Field, Setting], ...]:
    """The fields of a section that are keys of the file, in declaration order (the order they are checked in)."""
    found = _SETTINGS.get(schema)
    if found is None:
        # read once per class: a file's load asks twice per table (its keys, then its values), for every entry
        found = _SETTINGS[schema] = tuple((f, f.metadata[_SETTING]) for f in dataclasses.fields(schema)
                                          if _SETTING in f.metadata)
    return found


_SETTINGS: dict[type, tuple[tuple[dataclasses.Field, Setting], ...]] = {}   # as many as the classes declared


def keys(schema: type, where: str = "") -> Iterator[tuple[str, Setting]]:
    """Every key of a file (dotted path, Setting), sections and arrays of tables expanded: the reference."""
    for f, s in settings(schema):
        key = join(where, f.name)
        yield key, s
        if isinstance(s.kind, (Section, Tables)):
            yield from keys(s.kind.schema, key)
        elif isinstance(s.kind, NamedTables):
            yield from keys(s.kind.schema, join(key, "*"))   # * stands for each name the file gives


def load(schema: type[T], table: Any, where: str = "") -> T:
    """The section `schema` read from a parsed `table`, every key checked. Key names are checked before values,
    through nested sections, so a misspelt key is what gets reported even where a value is wrong too."""
    _check_keys(schema, table, where, None)
    return _build(schema, table, where)


def join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def key_text(key: str) -> str:
    """A key from a file as it may appear in a one-line message: bare if it is a plain TOML bare key, quoted
    (newlines and control characters escaped, length capped) if not."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key) else quoted(key)


def quoted(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _check_keys(schema: type, table: Any, where: str, s: Setting | None) -> None:
    if not isinstance(table, dict):
        raise _not_a_table(where, s)
    declared = {f.name: fs for f, fs in settings(schema)}
    for name, value in table.items():
        found = declared.get(name)
        if found is None:
            if not getattr(schema, "other_keys", False):
                raise Invalid(_unknown(where, name, declared))
        elif isinstance(found.kind, Section):
            _check_keys(found.kind.schema, value, join(where, name), found)


def _unknown(where: str, name: str, declared: dict[str, Setting]) -> str:
    known = ", ".join(sorted(declared))
    if not where:
        return f"unknown section [{key_text(name)}] (known: {known})"
    return f"unknown key {where}.{key_text(name)} (known: {known})"


def _not_a_table(key: str, s: Setting | None) -> Invalid:
    want = s.wanted if s is not None else "a table"
    # a top-level section is named as its header is written
    shown = f"[{key}]" if re.fullmatch(r"[A-Za-z0-9_-]+", key) else key
    return Invalid(f"{shown} must be {want}", key=key, expect=want)


def _build(schema: type[T], table: dict[str, Any], where: str) -> T:
    values = {}
    for f, s in settings(schema):
        key = join(where, f.name)
        if f.name in table:
            values[f.name] = s.kind.check(table[f.name], s, key)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise Invalid(f"{where} needs {f.name} ({s.doc})" if where else f"{f.name} is missing ({s.doc})",
                          key=key, missing=True)
    section = schema(**values)
    after_load = getattr(section, "after_load", None)
    return after_load(where) if after_load is not None else section


# ---- kinds ------------------------------------------------------------------------------------------------------
# Booleans are ints in Python: every numeric kind refuses them, or `true` would read as 1.

class _Seconds(Kind):
    """A duration: positive, finite (NaN compares false with everything, and inf would never expire anything),
    at most `maximum`; stored as a float."""

    def check(self, value: Any, s: Setting, key: str) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value)) or not 0 < value <= _top(s)):
            raise s.wrong(key)
        return float(value)

    def describe(self, s: Setting) -> str:
        return f"a positive number of seconds, at most {_top(s):.0f} ({_top(s) / DAY:.0f} days)"


class _Count(Kind):
    """An integer from `minimum` (default 1) to `maximum`."""

    def check(self, value: Any, s: Setting, key: str) -> int:
        low = 1 if s.minimum is None else s.minimum
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _top(s):
            raise s.wrong(key)
        return value

    def describe(self, s: Setting) -> str:
        top = _top(s)
        unit = f" {s.unit}" if s.unit else ""
        if s.unit == "MiB" and top >= 1024:
            unit += f" ({int(top) >> 10} GiB)"   # memory is bought, and thought of, in GiB
        if s.minimum is not None and s.minimum > 1:
            return f"an integer from {s.minimum} to {top}{unit}"
        return f"a positive integer, at most {top}{unit}"


def _top(s: Setting) -> int | float:
    if s.maximum is None:
        raise TypeError("a bounded kind needs a maximum")
    return s.maximum


class Text(Kind):
    """A string, optionally non-empty, bounded, printable or without NUL."""

    __slots__ = ("empty", "max_length", "printable", "nul")

    def __init__(self, *, empty: bool = False, max_length: int | None = None, printable: bool = False,
                 nul: bool = True):
        self.empty = empty              # "" allowed
        self.max_length = max_length
        self.printable = printable      # no control characters (so, one line)
        self.nul = nul                  # NUL allowed; not in anything handed to the OS, such as a path

    def check(self, value: Any, s: Setting, key: str) -> str:
        if (not isinstance(value, str) or (not value and not self.empty)
                or (self.max_length is not None and len(value) > self.max_length)
                or (self.printable and not value.isprintable()) or (not self.nul and "\0" in value)):
            raise s.wrong(key)
        return value

    def describe(self, s: Setting) -> str:
        text = "a string" if self.empty else "a non-empty string"
        if self.max_length is not None:
            text += f" of at most {self.max_length} {'printable ' if self.printable else ''}characters"
        return text


class Choice(Kind):
    """One of a fixed set of strings."""

    __slots__ = ("options",)

    def __init__(self, options: tuple[str, ...]):
        self.options = options

    def check(self, value: Any, s: Setting, key: str) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise s.wrong(key)
        return value

    def describe(self, s: Setting) -> str:
        return f"one of {', '.join(self.options)}"


class _Flag(Kind):
    def check(self, value: Any, s: Setting, key: str) -> bool:
        if not isinstance(value, bool):
            raise s.wrong(key)
        return value

    def describe(self, s: Setting) -> str:
        return "true or false"


class _Number(Kind):
    """Any finite number, as a float (the model file's JSON numbers)."""

    def check(self, value: Any, s: Setting, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise s.wrong(key)
        if not math.isfinite(value):
            raise s.wrong(key, "finite")
        return float(value)

    def describe(self, s: Setting) -> str:
        return "a number"


class _Fraction(Kind):
    """A share or a score: a number above 0 and at most 1, as a float (NaN fails both comparisons)."""

    def check(self, value: Any, s: Setting, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise s.wrong(key)
        return float(value)

    def describe(self, s: Setting) -> str:
        return "a number above 0 and at most 1"


class _Integer(Kind):
    def check(self, value: Any, s: Setting, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise s.wrong(key)
        return value

    def describe(self, s: Setting) -> str:
        return "an integer"


class _Plain(Kind):
    """A value of one container type, taken as it is (its contents are the section's own business)."""

    __slots__ = ("kind", "wording")

    def __init__(self, kind: type, wording: str):
        self.kind = kind
        self.wording = wording

    def check(self, value: Any, s: Setting, key: str) -> Any:
        if not isinstance(value, self.kind):
            raise s.wrong(key)
        return value

    def describe(self, s: Setting) -> str:
        return self.wording


class _Strings(Kind):
    """A list of strings, as a tuple; at least `minimum` of them."""

    def check(self, value: Any, s: Setting, key: str) -> tuple[str, ...]:
        if (not isinstance(value, list) or not all(isinstance(v, str) for v in value)
                or len(value) < (s.minimum or 0)):
            raise s.wrong(key)
        return tuple(value)

    def describe(self, s: Setting) -> str:
        return "a non-empty list of strings" if s.minimum else "a list of strings"


class Section(Kind):
    """A sub-table read as its own section dataclass."""

    __slots__ = ("schema",)

    def __init__(self, schema: type):
        self.schema = schema

    def check(self, value: Any, s: Setting, key: str) -> Any:
        _check_keys(self.schema, value, key, s)
        return _build(self.schema, value, key)

    def describe(self, s: Setting) -> str:
        return "a table"


class Tables(Kind):
    """An array of tables ([[allow]], or a list of inline tables), each read as the section `schema`; a tuple.
    Entries are numbered from 1, as a reader counts them in the file."""

    __slots__ = ("schema",)

    def __init__(self, schema: type):
        self.schema = schema

    def check(self, value: Any, s: Setting, key: str) -> tuple:
        if not isinstance(value, list):
            raise s.wrong(key)
        out: list[Any] = []
        for i, entry in enumerate(value, 1):
            where = f"{key}[{i}]"
            if not isinstance(entry, dict):
                raise Invalid(f"{where} must be a table", key=where, expect="a table")
            out.append(load(self.schema, entry, where))
        return tuple(out)

    def describe(self, s: Setting) -> str:
        return "an array of tables"


class NamedTables(Kind):
    """A table of named sub-tables ([sites.NAME]), each read as the section `schema`: a tuple of (name, section)
    in file order. The names are the file's own words, quoted in messages like any key."""

    __slots__ = ("schema",)

    def __init__(self, schema: type):
        self.schema = schema

    def check(self, value: Any, s: Setting, key: str) -> tuple:
        if not isinstance(value, dict):
            raise s.wrong(key)
        out: list[tuple[str, Any]] = []
        for name, entry in value.items():
            where = join(key, key_text(name))
            if not isinstance(entry, dict):
                raise Invalid(f"{where} must be a table: [{where}]", key=where, expect="a table")
            out.append((name, load(self.schema, entry, where)))
        return tuple(out)

    def describe(self, s: Setting) -> str:
        return "named tables"


SECONDS: Kind = _Seconds()
COUNT: Kind = _Count()
FLAG: Kind = _Flag()
NUMBER: Kind = _Number()
FRACTION: Kind = _Fraction()
INTEGER: Kind = _Integer()
STRINGS: Kind = _Strings()
TABLE: Kind = _Plain(dict, "a table")
LIST: Kind = _Plain(list, "a list")
