"""The manuf index (sensor.enrich.manuf_index) answers exactly what the parsed table (parse_manuf) does: on the
installed Wireshark file, on odd lines in every position, and on random files; every test twice, the line scan in C
(sensor/_manuf.c) and in numpy (_locate_numpy, its reference), which are also held to the same arrays."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor import compiled
from sensor.enrich import manuf_index
from sensor.enrich.makers import MANUF_PATHS, ManufDatabase, parse_manuf
from sensor.enrich.manuf_index import BITS, MAX_LEAD_BYTES, ManufIndex, indexable


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def scan(request, monkeypatch) -> str:
    """Runs each test twice: the manuf file's line scan as sensor._manuf.locate and as _locate_numpy."""
    on = request.param == "compiled"
    if on and compiled.manuf_extension is None:
        pytest.skip("the C extension sensor._manuf was not built on this machine")
    monkeypatch.setattr(compiled, "manuf", on)
    return request.param


def _same_scan(data: bytes) -> None:
    """The compiled scan gives the reference's arrays, value for value and in order."""
    if compiled.manuf_extension is None:
        return
    got = manuf_index._locate(data) if compiled.manuf else None
    want = manuf_index._locate_numpy(data)
    if got is not None:
        assert [a.tolist() for a in got] == [a.tolist() for a in want], data[:200]
        assert all(a.dtype == b.dtype for a, b in zip(got, want, strict=True))


def _same(data: bytes, keys: list[tuple[int, int]]) -> None:
    _same_scan(data)
    table = parse_manuf(data.decode("utf-8", errors="replace"))
    index = ManufIndex(data)
    for bits, key in keys:
        assert index.name(bits, key) == table.get(bits, {}).get(key), (bits, hex(key))
    for bits in BITS:   # every listed prefix, and none beyond them
        for key, name in table.get(bits, {}).items():
            assert index.name(bits, key) == name, (bits, hex(key))
        assert index.listed(bits) >= set(table.get(bits, {}))


def test_index_answers_as_the_parsed_table_on_odd_lines():
    data = ("# a comment\n\n"
            "no tab here\n"
            "01:00:5E/25\tMulticast\tIPv4 multicast\n"
            "01:00:5E/xx\tBroken\tBad length\n"
            "zz:zz:zz\tBad\tNot hex\n"
            "00:00:0C\tCisco\tCisco Systems, Inc\n"
            "00:00:0d\tFibronics\n"                       # lower case, short name only
            "00:00:0E\tFujitsu\t   \n"
            "00-00-0F\tNeXT\tNeXT, Inc.\n"
            "0000.10\tSytek\tSytek Inc.\n"
            "  00:00:11\tSpaced\tLeading blanks\n"
            "00:00:0C\tCisco2\tCisco, listed again\n"      # the later line wins
            "00:1B:C5:00:00:00/36\tConverg\tConverging Systems Inc.\n"
            "8C:1F:64:F0:00:00/28\tA\tA Company\n"
            "8C:1F:64:F0:00:00/24\tB\tThe /24 written long\n"
            "40:2C:76\tRealOwner\tReal Owner\n"
            "40:2C:76\tIEEERegi\tIEEE Registration Authority\n"   # does not override an owner
            "50:2C:76\tIEEERegi\tIEEE Registration Authority\n"
            "00:00:12\tCafé\tCaf\xe9 \u00e0 la carte\n"
            "00:00:13\tshort").encode() + b"\n00:00:14\tBad \xff byte\n"
    assert indexable(data)
    _same(data, [(24, 0x00000C), (24, 0x00000D), (24, 0x00000E), (24, 0x00000F), (24, 0x000010), (24, 0x000011),
                 (24, 0x402C76), (24, 0x502C76), (24, 0x8C1F64), (24, 0x000012), (24, 0x000013), (24, 0x000014),
                 (36, 0x001BC5000), (28, 0x8C1F64F), (24, 0x01005E), (24, 0xABCDEF)])
    assert ManufIndex(data).name(24, 0x00000C) == "Cisco, listed again"
    assert ManufIndex(data).name(24, 0x402C76) == "Real Owner"
    assert ManufIndex(data).name(24, 0x502C76) is None


@pytest.mark.parametrize("data", [b"", b"\n\n", b"# only a comment\n", b"no tab here", b"zz:zz:zz\tBad\tNot hex\n"])
def test_a_file_without_assignments_knows_no_prefix(data, tmp_path):
    assert indexable(data)
    _same(data, [(24, 0), (28, 0), (36, 0)])
    path = tmp_path / "manuf"
    path.write_bytes(data)
    db = ManufDatabase.load(path)
    assert db.lookup(0x00000C000001) is None and len(db) == 0


def test_other_line_breaks_are_left_to_the_line_parser(tmp_path):
    path = tmp_path / "manuf"
    path.write_bytes(b"00:00:0C\tCisco\tCisco Systems\r\n00:00:0D\tFib\tFibronics\x0b00:00:0E\tFuj\tFujitsu\n")
    assert not indexable(path.read_bytes())
    db = ManufDatabase.load(path)
    assert [db.lookup(k << 24 | 1) for k in (0x0C, 0x0D, 0x0E)] == ["Cisco Systems", "Fibronics", "Fujitsu"]


@pytest.mark.parametrize("seed", range(20))
def test_index_answers_as_the_parsed_table_on_random_files(seed):
    rng = random.Random(seed)
    alphabet = "0123456789abcdefABCDEF:-./\t #x\n"
    lines = []
    for _ in range(200):
        prefix = ":".join(f"{rng.randrange(4):02X}" for _ in range(rng.choice((3, 6))))
        if ":" in prefix[9:]:
            prefix += rng.choice(("/28", "/36", "/24", "/4", ""))
        if rng.random() < 0.2:   # damage it
            i = rng.randrange(len(prefix) + 1)
            prefix = prefix[:i] + rng.choice(alphabet) + prefix[i + 1:]
        name = rng.choice(("Acme", "IEEE Registration Authority", "", " ", "Ünïcode"))
        lines.append("\t".join([prefix, "Short", name][:rng.choice((1, 2, 3))]))
    data = "\n".join(lines).encode()
    keys = [(b, rng.randrange(1 << 12) >> 0) for b in BITS for _ in range(50)]
    keys += [(24, k) for k in range(1 << 8)] + [(28, k) for k in range(1 << 8)]
    if indexable(data):
        _same(data, keys)


def test_installed_file_indexed_as_parsed():
    path = next((Path(p) for p in MANUF_PATHS if Path(p).is_file()), None)
    if path is None:
        pytest.skip("Wireshark's manuf is not installed")
    data = path.read_bytes()
    assert indexable(data)
    _same_scan(data)
    table = parse_manuf(data.decode("utf-8", errors="replace"))
    index = ManufIndex(data)
    for bits in BITS:
        for key, name in table.get(bits, {}).items():
            assert index.name(bits, key) == name
        listed = index.listed(bits)
        assert listed >= set(table.get(bits, {}))
        assert all(index.name(bits, k) is None for k in listed - set(table.get(bits, {})))   # IEEE RA only
    db = ManufDatabase.load(path)
    assert len(db) == sum(len(t) for t in table.values())


@pytest.mark.parametrize("mark", ["\x85", "\u2028", "\u2029"])
def test_each_unicode_line_break_anywhere_makes_a_file_not_indexable(mark):
    # the random test above seldom makes a three-byte break with no other break beside it
    line = "00:1B:C5\tAcme\tAcme Ltd\n"
    for at in (0, 9, len(line) - 1, len(line)):
        text = line[:at] + mark + line[at:]
        assert not indexable(text.encode()), (at, text)
        for lead in (b"\xc2", b"\xe2", b"\xe2\x80"):   # a stray lead byte just before one
            assert not indexable(line.encode() + lead + mark.encode())
    assert indexable(("00:1B:C5\tAcme \u00c2\u00e9 \u20ac\u2020\u2030\n").encode())   # lead bytes C2, E2 alone


def test_a_file_of_many_lead_bytes_is_parsed_line_by_line_with_the_same_answers(tmp_path):
    # past MAX_LEAD_BYTES characters that start with C2 or E2 the search for breaks stops: parse_manuf answers
    path = tmp_path / "manuf"
    path.write_text("00:1B:C5\tAcme\tAcme \u00a9 Ltd\n" + "# \u00a9\u2020\n" * (MAX_LEAD_BYTES // 2)
                    + "00:1B:C6\tBeta\n", encoding="utf-8")
    assert not indexable(path.read_bytes())
    assert indexable(path.read_bytes()[:2000])
    db = ManufDatabase.load(path)
    assert db.lookup(0x001BC5000001) == "Acme \u00a9 Ltd" and db.lookup(0x001BC6000001) == "Beta"


@pytest.mark.parametrize("seed", range(5))
def test_indexable_means_splitlines_breaks_at_newlines_only(seed):
    rng = random.Random(seed)
    pieces = [b"a", b"\n", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2", b"\x85", b"\xe2", b"\x80",
              b"\xa8", b"\xa9", b"\xc3\xa9", b"\t"]
    for _ in range(300):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        text = data.decode("utf-8", errors="replace")
        by_newline = text.split("\n")
        if by_newline and by_newline[-1] == "":
            by_newline.pop()
        assert indexable(data) == (text.splitlines() == by_newline), data


_LINE_PIECES = st.sampled_from([b"00", b"1b", b"C5", b"Fz", b":", b"-", b".", b"/", b"28", b"36", b"24", b"\t", b" ",
                                b"#", b"Acme", b"IEEE Registration Authority", b"\xc3\xa9", b"\xff", b"\r", b"\x85"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(_LINE_PIECES, max_size=14).map(b"".join), max_size=12), tail=st.booleans())
def test_any_file_is_indexed_as_parsed_or_left_to_the_parser(lines, tail):
    data = b"\n".join(lines) + (b"\n" if tail else b"")
    _same_scan(data)
    table = parse_manuf(data.decode("utf-8", errors="replace"))
    if indexable(data):
        index = ManufIndex(data)
        for bits in BITS:
            for key in {*table.get(bits, {}), *index.listed(bits)}:
                assert index.name(bits, key) == table.get(bits, {}).get(key)


def test_a_key_too_long_for_its_length_aliases_no_other_assignment():
    # (bits, key) share one dict key: a /24 key carrying bit 42 would read as a /28 entry's without the guard.
    data = b"00:1B:C5:00:00:00/28\tLong\tA /28 maker\n00:1B:C5\tShort\tA /24 maker\n"
    index = ManufIndex(data)
    assert index.name(28, 0x001BC50) == "A /28 maker" and index.name(24, 0x001BC5) == "A /24 maker"
    assert index.listed(28) == {0x001BC50} and index.listed(24) == {0x001BC5}
    assert index.name(24, (4 << 40) | 0x001BC50) is None and index.name(24, -1) is None


# Lines near the canonical shapes, one byte off in every column: each of the scan's checks decides some of them.
_NEAR = [b"00:1B:C5\tA", b"00:1b:c5\tA\tLong", b"00:1B:C5:00:00:00/36\tB", b"8C:1F:64:F0:00:00/28\tC",
         b"8C:1F:64:F0:00:00/24\tD", b"#0:1B:C5\tE", b"00:1B:C5", b"00:1B:C5:00:00:00/36",
         b"00:1B:C5:00:00:00/32\tF", b"00:1B:C5:00:00:00/25\tG", b"0A:BC:DE:F0:12:34/2x\tH"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(_NEAR) - 1), st.integers(0, 24),
                                st.sampled_from(b"09afAFgG:/\t#\n\x00 -.3628")), max_size=20),
       tail=st.booleans())
def test_the_compiled_scan_finds_the_lines_numpy_does(edits, tail):
    lines = [bytearray(line) for line in _NEAR]
    for which, at, byte in edits:
        line = lines[which]
        if at < len(line):
            line[at] = byte
        else:
            line.append(byte)
    data = b"\n".join(bytes(line) for line in lines) + (b"\n" if tail else b"")
    _same_scan(data)
    _same_scan(data[:-1])   # the last line cut


def test_the_compiled_scan_hands_the_line_parser_only_lines_that_are_not_comments():
    if compiled.manuf_extension is None:
        pytest.skip("the C extension sensor._manuf was not built on this machine")
    data = b"# comment\n00:1B:C5\tA\n\nodd line\n#\n00-1B-C6\tB"
    columns, odd = compiled.manuf_extension.locate(data)
    assert [memoryview(c).cast("q").tolist() for c in columns] == [[10], [20], [24], [0x001BC5]]
    assert memoryview(odd).cast("q").tolist() == [22, 30, 33, 43]
