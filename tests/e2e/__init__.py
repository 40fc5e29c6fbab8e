"""End to end, as a user runs it: the CLI as a separate process, detectors on labelled scenarios and real captures,
golden outputs, restarts, the metrics server, inspect, the bench scripts, the supply chain. A package, so its file
names may repeat elsewhere; tests/conftest.py applies."""
