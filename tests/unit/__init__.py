"""Fast unit tests, one file per module (tests/unit/test_<module>.py): in-process, milliseconds each, exact values.

A package, so that its files may share basenames with the older tests in tests/ (pytest then imports them as
unit.test_<module>); tests/conftest.py still applies. They are the tests scripts/mutation.sh runs against each
mutant (docs/testing.md, "Mutation testing").
"""
