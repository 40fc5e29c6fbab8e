"""Role evidence: behaviours that make a camera-side device a camera, a recorder or the gateway (Device.role)."""

from __future__ import annotations

from sensor.decode import PROTO_TCP, PROTO_UDP
from sensor.enrich.inventory import MAX_ROUTER_MACS, Device, Inventory
from sensor.flows import Flow
from sensor.tags import TAG_PPPP_LOGIN

RTSP_PORTS = (554, 8554)
# A one-way UDP flow this large, with almost nothing coming back, is a media stream.
VIDEO_MIN_BYTES = 100_000
VIDEO_MIN_RATIO = 20
__all__ = ["MAX_ROUTER_MACS", "RTSP_PORTS", "RoleEvidence"]


class RoleEvidence:
    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        # payload tag bits only a camera sends: a CS2 PPPP device login, and the indicator file's device-only
        # signatures (ThroughTek IOTC messages from a device), added by the pipeline
        self.device_bits = TAG_PPPP_LOGIN

    @property
    def router_macs(self) -> set[int]:
        """The routers' MACs, which the inventory keeps: they decide which addresses are one box."""
        return self.inventory.router_macs

    def from_flow(self, dev: Device, flow: Flow, is_orig: bool) -> None:
        """What a flow the device sent in says about it (is_orig: the device is the flow's originator)."""
        if flow.proto == PROTO_TCP and flow.resp_port in RTSP_PORTS and flow.resp_pkts:
            dev.evidence.add("rtsp_client" if is_orig else "rtsp_server")
        elif flow.proto == PROTO_UDP:
            if not is_orig and flow.resp_port == 53:
                dev.evidence.add("dns_server")
            elif not is_orig and flow.resp_port == 123 and flow.orig_port != 123:
                dev.evidence.add("ntp_server")
            elif flow.orig_payload >= VIDEO_MIN_BYTES and flow.orig_payload > VIDEO_MIN_RATIO * flow.resp_payload:
                dev.evidence.add("video_sender" if is_orig else "video_receiver")
        if (flow.orig_tags if is_orig else flow.resp_tags) & self.device_bits:
            dev.evidence.add("p2p_device")   # it registers as a P2P camera, whether or not anyone watches
        # Hosts behind the router carry its MAC too: only the device whose own MAC it is, is the gateway.
        if self.inventory.is_gateway(dev):
            dev.evidence.add("router_mac")

    def note_router_mac(self, mac: int) -> None:
        """Frames from Internet hosts carry the site router's MAC: whoever owns it is the gateway."""
        self.inventory.mark_router(mac)
