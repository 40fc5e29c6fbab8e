"""sensor/schema.py, as the config's one schema: the dataclasses state every key's default once, its doc line and
its bounds."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from sensor.config import Config, default_max_flows, parse_config
from sensor.schema import (
    COUNT,
    DAY,
    FLAG,
    FRACTION,
    INTEGER,
    LIST,
    NUMBER,
    SECONDS,
    STRINGS,
    TABLE,
    Choice,
    Frozen,
    Invalid,
    Kind,
    NamedTables,
    Section,
    Setting,
    Tables,
    Text,
    Values,
    key_text,
    keys,
    load,
    quoted,
    record,
    section,
    setting,
)


def test_defaults_are_stated_once():
    """An empty config, empty sections and the dataclasses' own defaults are one and the same."""
    assert parse_config({}, "(defaults)") == Config()
    sections = {key: s for key, s in keys(Config) if isinstance(s.kind, Section)}
    empty: dict = {}
    for name in sections:                      # nested sections ([detect.uploads]) as tables within their parent
        table = empty
        for part in name.split("."):
            table = table.setdefault(part, {})
    assert parse_config(empty, "(defaults)") == Config()
    for name, s in sections.items():
        default = Config()
        for part in name.split("."):
            default = getattr(default, part)
        assert load(s.kind.schema, {}, name) == s.kind.schema() == default
    assert Config().flows.max_flows == default_max_flows(Config().max_devices)   # the unset rule agrees


def test_every_key_has_a_doc_line_and_every_bound_a_maximum():
    for key, s in keys(Config):
        assert s.doc, key
        if s.kind in (SECONDS, COUNT):
            assert s.maximum, key


# ---- the engine on a schema of its own: every kind, its bounds and its exact messages ---------------------------


@dataclasses.dataclass(frozen=True)
class _Leaf:
    n: int = setting(kind=INTEGER, doc="required")
    label: str = setting("", kind=Text(empty=True), doc="may be empty")


@dataclasses.dataclass(frozen=True)
class _Inner:
    wait: float = setting(10.0, kind=SECONDS, maximum=DAY, unit="s", doc="a duration")
    size: int = setting(5, kind=COUNT, maximum=2048, unit="MiB", doc="a size")
    small: int = setting(5, kind=COUNT, minimum=0, maximum=9, doc="from zero")


@dataclasses.dataclass(frozen=True)
class _File:
    inner: _Inner = section(_Inner, "a section")
    name: str = setting("x", kind=Text(max_length=4, printable=True), doc="short")
    path: str = setting("p", kind=Text(nul=False), doc="a path")
    mode: str = setting("a", kind=Choice(("a", "b")), doc="a choice")
    flag: bool = setting(False, kind=FLAG, doc="a flag")
    ratio: float = setting(0.5, kind=NUMBER, doc="a number")
    count: int = setting(0, kind=INTEGER, doc="an integer")
    table: dict = setting(default_factory=dict, kind=TABLE, doc="a table")
    items: list = setting(default_factory=list, kind=LIST, doc="a list")
    words: tuple = setting((), kind=STRINGS, doc="strings")
    some: tuple = setting((), kind=STRINGS, minimum=1, doc="at least one")
    leaves: tuple = setting((), kind=Tables(_Leaf), doc="an array of tables")
    named: tuple = setting((), kind=NamedTables(_Leaf), doc="named tables")
    derived: int = 0

    def after_load(self, where: str) -> _File:
        return dataclasses.replace(self, derived=len(self.leaves) + len(self.named))


@dataclasses.dataclass(frozen=True)
class _Open:
    other_keys = True
    a: int = setting(1, kind=INTEGER, doc="a")


def test_every_kind_reads_its_values():
    assert load(_Inner, {"wait": 0.5, "size": 1}) == _Inner(0.5, 1, 5)
    got = load(_File, {"inner": {"wait": 1, "size": 2048, "small": 0}, "name": "abcd", "path": "/x", "mode": "b",
                       "flag": True, "ratio": 3, "count": -7, "table": {"k": 1}, "items": [1, "a"],
                       "words": ["a", "b"], "some": ["c"], "leaves": [{"n": 1}, {"n": 2, "label": "two"}],
                       "named": {"hq": {"n": 3}, "b r": {"n": 4}}})
    assert got.inner == _Inner(1.0, 2048, 0) and isinstance(got.inner.wait, float)
    assert (got.name, got.path, got.mode, got.flag, got.ratio, got.count) == ("abcd", "/x", "b", True, 3.0, -7)
    assert isinstance(got.ratio, float)
    assert (got.table, got.items, got.words, got.some) == ({"k": 1}, [1, "a"], ("a", "b"), ("c",))
    assert got.leaves == (_Leaf(1, ""), _Leaf(2, "two"))
    assert got.named == (("hq", _Leaf(3, "")), ("b r", _Leaf(4, "")))
    assert got.derived == 4
    assert load(_File, {}) == _File() and _File().inner == _Inner() and load(_Open, {"zzz": 1, "a": 2}) == _Open(2)


SCHEMA_ERRORS = [
    ({"inner": 5}, "[inner] must be a table"),
    ({"inner": {"wait": 0}}, "inner.wait must be a positive number of seconds, at most 86400 (1 days)"),
    ({"inner": {"wait": DAY + 0.5}}, "inner.wait must be a positive number of seconds, at most 86400 (1 days)"),
    ({"inner": {"wait": True}}, "inner.wait must be a positive number of seconds, at most 86400 (1 days)"),
    ({"inner": {"wait": float("nan")}}, "inner.wait must be a positive number of seconds, at most 86400 (1 days)"),
    ({"inner": {"wait": float("inf")}}, "inner.wait must be a positive number of seconds, at most 86400 (1 days)"),
    ({"inner": {"wait": "1"}}, "inner.wait must be a positive number of seconds, at most 86400 (1 days)"),
    ({"inner": {"size": 0}}, "inner.size must be a positive integer, at most 2048 MiB (2 GiB)"),
    ({"inner": {"size": 2049}}, "inner.size must be a positive integer, at most 2048 MiB (2 GiB)"),
    ({"inner": {"size": 1.0}}, "inner.size must be a positive integer, at most 2048 MiB (2 GiB)"),
    ({"inner": {"size": True}}, "inner.size must be a positive integer, at most 2048 MiB (2 GiB)"),
    ({"inner": {"small": -1}}, "inner.small must be a positive integer, at most 9"),
    ({"inner": {"small": 10}}, "inner.small must be a positive integer, at most 9"),
    ({"inner": {"x": 1}}, "unknown key inner.x (known: size, small, wait)"),
    ({"inner": {"x y": 1}}, "unknown key inner.'x y' (known: size, small, wait)"),
    ({"zz": 1}, "unknown section [zz] (known: count, flag, inner, items, leaves, mode, name, named, path, ratio, "
                "some, table, words)"),
    ({"name": ""}, "name must be a non-empty string of at most 4 printable characters"),
    ({"name": "abcde"}, "name must be a non-empty string of at most 4 printable characters"),
    ({"name": "a\nb"}, "name must be a non-empty string of at most 4 printable characters"),
    ({"name": 5}, "name must be a non-empty string of at most 4 printable characters"),
    ({"path": "a\0b"}, "path must be a non-empty string"),
    ({"mode": "c"}, "mode must be one of a, b"),
    ({"mode": 1}, "mode must be one of a, b"),
    ({"flag": 1}, "flag must be true or false"),
    ({"ratio": True}, "ratio must be a number"),
    ({"ratio": "1"}, "ratio must be a number"),
    ({"ratio": float("nan")}, "ratio must be finite"),
    ({"ratio": float("-inf")}, "ratio must be finite"),
    ({"count": True}, "count must be an integer"),
    ({"count": 1.0}, "count must be an integer"),
    ({"table": []}, "table must be a table"),
    ({"items": {}}, "items must be a list"),
    ({"words": "a"}, "words must be a list of strings"),
    ({"words": ["a", 1]}, "words must be a list of strings"),
    ({"some": []}, "some must be a non-empty list of strings"),
    ({"leaves": {}}, "leaves must be an array of tables"),
    ({"leaves": [{"n": 1}, 5]}, "leaves[2] must be a table"),
    ({"leaves": [{"n": 1}, {}]}, "leaves[2] needs n (required)"),
    ({"leaves": [{"n": 1, "m": 2}]}, "unknown key leaves[1].m (known: label, n)"),
    ({"named": []}, "named must be named tables"),
    ({"named": {"hq": 5}}, "named.hq must be a table: [named.hq]"),
    ({"named": {"a\nb": 5}}, "named.'a\\nb' must be a table: [named.'a\\nb']"),
    ({"named": {"hq": {}}}, "named.hq needs n (required)"),
]


@pytest.mark.parametrize("table,message", SCHEMA_ERRORS, ids=[m for _, m in SCHEMA_ERRORS])
def test_each_wrong_value_is_one_exact_message(table, message):
    with pytest.raises(Invalid) as caught:
        load(_File, table)
    assert str(caught.value) == message


@dataclasses.dataclass(frozen=True)
class _Shares:
    share: float = setting(0.5, kind=FRACTION, doc="a share")


@pytest.mark.parametrize("value,read", [(1, 1.0), (0.25, 0.25), (1e-9, 1e-9)])
def test_a_fraction_is_above_zero_and_at_most_one(value, read):
    got = load(_Shares, {"share": value}).share
    assert got == read and isinstance(got, float)


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.0000001, 2, float("nan"), float("inf"), True, "0.5"])
def test_anything_else_is_not_a_fraction(value):
    with pytest.raises(Invalid, match=r"^share must be a number above 0 and at most 1$"):
        load(_Shares, {"share": value})


def test_invalid_carries_the_key_and_what_was_expected():
    with pytest.raises(Invalid) as caught:
        load(_File, {"mode": "c"})
    assert (caught.value.key, caught.value.expect, caught.value.missing) == ("mode", "one of a, b", False)
    with pytest.raises(Invalid) as caught:
        load(_Leaf, {})
    assert str(caught.value) == "n is missing (required)"
    assert (caught.value.key, caught.value.expect, caught.value.missing) == ("n", "", True)
    with pytest.raises(Invalid) as caught:
        load(_File, {"leaves": [5]})
    assert (caught.value.key, caught.value.expect) == ("leaves[1]", "a table")
    with pytest.raises(Invalid) as caught:
        load(_File, {"inner": 5})
    assert (caught.value.key, caught.value.expect) == ("inner", "a table")
    with pytest.raises(Invalid) as caught:
        load(_File, [], "top.level")
    assert str(caught.value) == "top.level must be a table" and caught.value.key == "top.level"
    with pytest.raises(Invalid) as caught:
        load(_File, {"named": {"hq": 5}})
    assert (caught.value.key, caught.value.expect) == ("named.hq", "a table")


def test_a_bounded_kind_without_a_maximum_is_a_programming_error():
    with pytest.raises(TypeError, match="^a bounded kind needs a maximum$"):
        SECONDS.check(1, Setting(SECONDS, "d"), "k")


def test_descriptions_of_counts_and_texts():
    assert COUNT.describe(Setting(COUNT, "d", unit="MiB", maximum=1023)) == "a positive integer, at most 1023 MiB"
    assert COUNT.describe(Setting(COUNT, "d", unit="MiB", maximum=1024)) == (
        "a positive integer, at most 1024 MiB (1 GiB)")
    assert COUNT.describe(Setting(COUNT, "d", unit="s", maximum=4096)) == "a positive integer, at most 4096 s"
    assert SECONDS.describe(Setting(SECONDS, "d", maximum=2 * DAY)) == (
        "a positive number of seconds, at most 172800 (2 days)")
    assert Text(empty=True).describe(Setting(FLAG, "d")) == "a string"
    assert Text(max_length=3).describe(Setting(FLAG, "d")) == "a non-empty string of at most 3 characters"
    assert Setting(FLAG, "d", expect="yes or no").wanted == "yes or no"
    assert Setting(FLAG, "d").wrong("k", "finite").expect == "finite"


def test_keys_are_listed_dotted_with_tables_expanded():
    listed = [key for key, _ in keys(_File)]
    assert listed == ["inner", "inner.wait", "inner.size", "inner.small", "name", "path", "mode", "flag", "ratio",
                      "count", "table", "items", "words", "some", "leaves", "leaves.n", "leaves.label", "named",
                      "named.*.n", "named.*.label"]
    assert [key for key, _ in keys(_Leaf, "top")] == ["top.n", "top.label"]


def test_key_text_and_quoting():
    assert key_text("a-b_9") == "a-b_9" and key_text("a" * 64) == "a" * 64
    assert key_text("a" * 65) == repr("a" * 65) and key_text("a.b") == "'a.b'" and key_text("") == "''"
    assert quoted("x" * 80) == repr("x" * 80) and quoted("x" * 81) == repr("x" * 80) + "..."
    assert quoted("abcdef", limit=3) == "'abc'..."


def test_no_kind_is_a_dataclass():
    # Kinds with parameters are plain classes with __slots__ (sensor.schema.Kind): a frozen dataclass's six
    # generated methods cost ~0.3 ms of every start each, and nothing compares, hashes or prints a kind.
    import sensor.reference_data  # noqa: F401   (its kinds, beside sensor.config's, are what is checked)

    kinds, todo = [], [Kind]
    while todo:
        kinds.append(todo.pop())
        todo += kinds[-1].__subclasses__()
    assert len(kinds) > 10 and any(k.__module__ == "sensor.config" for k in kinds)
    assert not [k.__qualname__ for k in kinds if dataclasses.is_dataclass(k)]


def values_dataclasses() -> list[type]:
    """Every dataclass that takes its value methods from Values: the configuration's sections and the records a
    replay imports (the modules are imported here, so that none is missed for not being loaded yet)."""
    import sensor.cli.replay  # noqa: F401 - what a replay imports

    found, todo = [], list(Values.__subclasses__())
    while todo:
        cls = todo.pop()
        if getattr(sys.modules[cls.__module__], cls.__name__, None) is cls:   # not dataclass(slots=True)'s draft
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_values_dataclasses_compare_hash_and_print_as_generated_ones():
    """Values gives a frozen dataclass what dataclass(frozen=True) would generate: checked against a generated twin
    of each, on its defaults and with each field changed in turn."""
    classes = values_dataclasses()
    sections = {Config} | {s.kind.schema for _, s in keys(Config) if isinstance(s.kind, (Section, Tables, NamedTables))}
    assert len(classes) >= 22 and len(set(classes)) == len(classes) and sections <= set(classes)
    for cls in classes:
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert dataclasses.is_dataclass(cls) and (params.frozen or issubclass(cls, Frozen)), cls
        assert not params.eq and not params.repr, cls
        fields = dataclasses.fields(cls)
        twin = dataclasses.dataclass(frozen=True)(type(cls.__name__, (), {
            "__annotations__": {f.name: object for f in fields}, "__qualname__": cls.__qualname__,
            "__module__": cls.__module__,
            **{f.name: dataclasses.field(compare=f.compare, repr=f.repr, hash=f.hash) for f in fields}}))

        def twin_of(record, twin=twin, fields=fields):
            return twin(**{f.name: getattr(record, f.name) for f in fields})

        base = cls(**{f.name: "required" for f in fields                 # the defaults, and a value where none
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})
        variants = [dataclasses.replace(base, **{f.name: object()}) for f in fields]
        for a in (base, *variants):
            assert repr(a) == repr(twin_of(a))
            assert hash(a) == hash(twin_of(a))
            for b in (base, dataclasses.replace(base), *variants):
                assert (a == b) == (twin_of(a) == twin_of(b)) and (a != b) == (twin_of(a) != twin_of(b))
        assert all(v != base for v in variants) and base == dataclasses.replace(base)
        assert base != twin_of(base) and base.__eq__(twin_of(base)) is NotImplemented
        kin = type("Kin", (cls,), {})   # the same fields and values, another class: unequal, as generated
        assert base != kin(**{f.name: getattr(base, f.name) for f in fields})


def records() -> list[type]:
    """Every record (schema.record, a Frozen subclass) a replay and the reference files import."""
    import sensor.cli.replay
    import sensor.reference_data  # noqa: F401

    found, todo = [], list(Frozen.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _generated_twin(cls: type) -> type:
    """dataclass(frozen=True)'s own class of the same fields, defaults, factories and keyword-only marks."""
    fields = dataclasses.fields(cls)
    return dataclasses.dataclass(frozen=True, eq=False, repr=False)(type(cls.__name__, (), {
        "__annotations__": {f.name: object for f in fields}, "__qualname__": cls.__qualname__,
        "__module__": cls.__module__,
        **{f.name: dataclasses.field(default=f.default, default_factory=f.default_factory, kw_only=f.kw_only)
           for f in fields}}))


def _outcome(make, *args, **kwargs):
    try:
        made = make(*args, **kwargs)
    except TypeError:
        return "refused"
    return "made", dict(vars(made))


def test_a_record_is_made_and_refused_as_a_generated_frozen_dataclass_is():
    """schema.Frozen's one constructor against the one dataclass(frozen=True) compiles for each record: every way of
    calling it (positional, keywords, defaults and factories, too many, unknown, twice, missing), the same fields or
    a TypeError alike (the wording may differ: no caller shows it); and assigning or deleting a field refused
    alike."""
    classes = records()
    assert {Config, Setting} <= set(classes) and len(classes) >= 30
    for cls in classes:
        twin, fields = _generated_twin(cls), dataclasses.fields(cls)
        positional = [f.name for f in fields if not f.kw_only]
        required = {f.name: f"required {f.name}" for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        every = {f.name: f"value {f.name}" for f in fields}
        calls = [((), required), ((), every), (tuple(every[n] for n in positional), {}),
                 (tuple(every[n] for n in positional), {n: v for n, v in every.items() if n not in positional}),
                 (tuple(every[n] for n in positional) + ("one too many",), {}),
                 ((), {**every, "no_such_field": 1}), ((), {})]
        if positional:
            calls.append((("first",), {positional[0]: "again"}))
        for name in required:
            calls.append(((), {n: v for n, v in required.items() if n != name}))
        for args, kwargs in calls:
            assert _outcome(cls, *args, **kwargs) == _outcome(twin, *args, **kwargs), (cls, args, kwargs)
        made = cls(**every)
        for f in fields:
            with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot assign to field '{f.name}'"):
                setattr(made, f.name, 1)
            with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot delete field '{f.name}'"):
                delattr(made, f.name)
        assert dataclasses.replace(made) is not made and vars(dataclasses.replace(made)) == vars(made)
        # a factory's value is the factory's, and made afresh for each record as the generated constructor makes it:
        # two records never share one (but where Python itself shares immutable values, an empty frozenset say)
        one, other = cls(**required), cls(**required)
        for f in fields:
            if f.default_factory is not dataclasses.MISSING:
                assert getattr(one, f.name) == f.default_factory()
                if not isinstance(getattr(one, f.name), (frozenset, tuple, str, bytes, int, float, type(None))):
                    assert getattr(one, f.name) is not getattr(other, f.name)


def test_record_refuses_a_class_that_is_not_frozen_or_asks_more_of_the_constructor():
    with pytest.raises(TypeError, match="derives from schema.Frozen"):
        record(type("Loose", (), {"__annotations__": {"x": int}}))
    # dataclass() would call __post_init__ and leave init=False fields out of the constructor; Frozen's does neither
    with pytest.raises(TypeError, match="no __post_init__"):
        record(type("Checked", (Frozen,), {"__annotations__": {"x": int}, "__post_init__": lambda self: None}))
    with pytest.raises(TypeError, match="no field outside its constructor"):
        record(type("Derived", (Frozen,), {"__annotations__": {"x": int},
                                           "x": dataclasses.field(default=0, init=False)}))
