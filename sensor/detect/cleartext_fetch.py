"""cleartext_fetch: a camera-side device fetching a file in the clear: a TFTP read request, or an HTTP GET of a
script, executable, firmware image or archive (sensor.enrich.fetches says which). That is how droppers load their
payload onto cameras (wget or tftp of a shell script, then of a binary per CPU architecture), and a firmware image
fetched in cleartext is one anybody on the path can swap."""

from __future__ import annotations

from sensor.detect.alert import Alert
from sensor.detect.base import Detector
from sensor.detect.text import covered_note, describe_destination, describe_device
from sensor.enrich import FileFetch, Observation

WHERE = {"camera": "on the camera VLAN", "private": "in another private network", "core": "in a core network",
         "public": "on the public Internet", "allowed": "allowed by the site's rules"}
WHY = {"script": "this is how droppers load their payload onto cameras.",
       "firmware image": "a firmware image fetched in cleartext is one anybody on the path can swap."}


class CleartextFetchDetector(Detector):
    """In any scope, allowed destinations included: an allow rule says the server may be reached, not that a file
    fetched from it in the clear is the one it sent. One alert per (device, server) episode."""

    name = "cleartext_fetch"

    def fetch(self, fetch: FileFetch) -> Alert | None:
        dev = fetch.device
        if not self.new_episode((dev.id, fetch.peer), fetch.ts, 1, 0):
            return None
        obs = Observation(fetch.ts, dev, 1, 0, True, fetch.peer, fetch.port, fetch.proto, fetch.name, fetch.scope,
                          fetch.vlan)
        server = describe_destination(fetch.peer, fetch.name, fetch.port, fetch.proto)
        where = WHERE.get(fetch.scope, f"({fetch.scope})")
        if fetch.transport == "tftp":
            evidence = f"TFTP read request for {fetch.path}"
            how = f'asked the TFTP server {server} {where} for the {fetch.kind} "{fetch.path}"'
        else:
            evidence = f"HTTP GET {fetch.path}"
            how = f'downloaded the {fetch.kind} "{fetch.filename}" over plain HTTP from {server} {where} ' \
                  f'(GET "{fetch.path}")'
        summary = f"{describe_device(dev)} {how}: {WHY.get(fetch.kind, WHY['script'])}{covered_note(dev)}"
        return self.alert(obs, "medium", 0.8, summary, transport=fetch.transport, file=fetch.filename,
                          file_kind=fetch.kind, evidence=evidence)
