"""`camwatch report`: the removal-planning report (docs/report.md). sources gathers devices and alerts, sites reads
`[sites.<name>]`, ranking orders the covered devices, charts draws SVG, render writes HTML and CSV."""

from sensor.export.csv_cells import safe_cell

from .ranking import FINDINGS, Ranked, rank
from .render import context, render_html, write_csv
from .sites import Site, load_report_config
from .sources import DeviceRecord, Estate, Incident

__all__ = ["FINDINGS", "DeviceRecord", "Estate", "Incident", "Ranked", "Site", "context", "load_report_config",
           "rank", "render_html", "safe_cell", "write_csv"]
