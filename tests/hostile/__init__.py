"""Hostile input end to end: damaged captures, mistyped configs, floods of forged sources, broken state files, hostile
bytes on the wire. A package, so its file names may repeat elsewhere; tests/conftest.py applies."""
