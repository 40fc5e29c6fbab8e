"""camwatch: passive sensor for CCTV camera VLANs.

Data flow, one module per stage: capture -> decode -> flows -> enrich -> detect -> export.
"""

__version__ = "0.1.0"
