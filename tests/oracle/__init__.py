"""Oracles: camwatch against Wireshark (tshark, capinfos, pyshark) on every fixture."""
