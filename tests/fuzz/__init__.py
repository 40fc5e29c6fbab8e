"""Property-based fuzzing (hypothesis) across the reader, the decoder, the pipeline and the wire parsers. A package;
tests/conftest.py applies."""
