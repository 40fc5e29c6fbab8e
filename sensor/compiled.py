"""The compiled extensions, sensor._walk (sensor/_walk.c), sensor._flows (sensor/_flows.c), sensor._tally
(sensor/_tally.c) and sensor._manuf (sensor/_manuf.c), imported here and nowhere else, and the switches that choose
between each compiled path and the Python/numpy code it shadows.

The extension is optional: a machine without a C compiler installs camwatch without it, `extension` is then None
and every stage uses its reference code, which gives the same results, slower. Where it is built, each path is
used while its switch is on. The switches exist for the tests: they turn one off to hold that compiled path to its
reference (the same records, decoded fields, flow groups, payload tags, parser rows and pipe reads); nothing else
sets them.
"""

from __future__ import annotations

__all__ = ["columns", "decode", "extension", "fill", "flows_extension", "forest", "group", "held", "import_error",
           "manuf", "manuf_extension", "route", "sightings", "table", "tags", "tally", "tally_extension", "walk",
           "walk_pcapng"]

try:
    from sensor import _walk as extension
    import_error: str | None = None
except ImportError as exc:  # built without a C compiler: the reference code gives the same results, slower
    extension = None  # type: ignore[assignment]
    import_error = str(exc)

try:
    from sensor import _flows as flows_extension
except ImportError:  # the same: FlowTable._apply_python does its work
    flows_extension = None  # type: ignore[assignment]

try:
    from sensor import _tally as tally_extension
except ImportError:  # the same: WindowFeatures.tally does its work
    tally_extension = None  # type: ignore[assignment]

try:
    from sensor import _manuf as manuf_extension
except ImportError:  # the same: manuf_index._locate_numpy does its work
    manuf_extension = None  # type: ignore[assignment]

walk = True     # capture.CaptureReader: the classic pcap record walk (reference: _walk_pcap_python)
walk_pcapng = True   # capture.CaptureReader: pcapng's runs of packet blocks (reference: the _parse_pcapng loop)
decode = True   # decode.decode: link/network/transport headers (reference: decode_numpy)
group = True    # flows.group: per-batch flow grouping (reference: group_numpy)
table = True    # flows.FlowTable.update: the per-flow table step (reference: FlowTable._apply_python)
tags = True     # tags.PayloadTagger: payload-profile bits (reference: PayloadTagger.tags_numpy)
route = True    # enrich.routing.route: the rows each parser wants (reference: route_numpy)
fill = True     # live.LiveCapture: the pump's gathering pipe read, without the GIL (reference: select and readv)
columns = True  # enrich.new_flows: a window's new flows read as columns (reference: new_flows.columns_python)
held = True     # enrich.new_flows, admission: a held run's sources looked up, its budget refilled, in C (reference:
                # _texts and Inventory.first_known; AdmissionBudget.holding's numpy running sum)
sightings = True   # enrich.link: the sightings' LRU an Lru, a flood's sighted in C (reference: OrderedDict, sight_each)
tally = True    # model.WindowFeatures.tallier: a camera's repeat observation (reference: WindowFeatures.tally)
manuf = True    # enrich.manuf_index: the manuf file's line scan at start-up (reference: _locate_numpy)
forest = True   # model.forest.Forest: the Isolation Forest walk of the anomaly scores (reference: Forest._depths_numpy)
