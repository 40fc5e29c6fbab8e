"""Live capture as root: camwatch run on veth pairs between private network namespaces, fed by tcpreplay; dumpcap
never outliving camwatch. Marked `root`. A package; tests/conftest.py applies."""
