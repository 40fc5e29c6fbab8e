"""CSV that a spreadsheet can open safely: every wire string in a cell is attacker-controlled.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading apostrophe (OWASP, "CSV
injection"), so a spreadsheet shows it as text instead of running it as a formula. Numbers stay numbers.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
