"""Each VM's own traffic filter (a libvirt nwfilter), built with lxml.

libvirt's stock `clean-traffic` guards IPv4 only; this filter guards both families on every NIC of
the VM. From the guest ("out") it lets through only frames from the VM's own MACs, and of those
only ARP and IP that speak for the VM's own addresses (IPv6 link-local and the unspecified address
too, which neighbour discovery needs); router advertisements and redirects, DHCP and DHCPv6
server answers, and every other kind of frame are dropped. Towards the guest ("in") only IP for
its own addresses (and broadcast, multicast, link-local) passes, so a neighbour cache that a
forged answer poisoned still delivers nothing to it.

libvirt applies these rules with ebtables on bridge ports; on a routed node's taps the host's
routes and reverse-path filtering keep a guest to its own addresses (see the README).

The filter is named after the VM and is its own. A VM's firewall (issue 16) joins it as more rules, one
filter in all, so that one definition changes both at once and the NICs that refer to it follow live.
Those rules are iptables and ip6tables rules (libvirt's tcp, udp, icmp, all elements and their -ipv6
twins), which see bridged traffic through br_netfilter and track connections; the anti-spoofing rules
above are ebtables rules and run first, on the bridge. With a default policy of deny, towards the
guest ("in") only these pass: replies to the VM's own connections (ESTABLISHED, RELATED), neighbour
discovery (which connection tracking does not follow, so matched without state), and what a rule
allows (new connections and their replies); other new connections are dropped. Nothing the guest
sends is dropped by the firewall: its own outbound traffic is always allowed.
"""

import ipaddress

from lxml import etree
from lxml.builder import E

from .specs import FilterSpec, FirewallRuleSpec, FirewallSpec

# ebtables priorities: lower runs first. Drops of what is never allowed, then the VM's own
# traffic let through (return: accepted), then the rest of each protocol dropped.
_NEVER, _OWN, _REST, _OTHER = "-900", "-800", "-700", "-600"
UNSPECIFIED_V4 = ".".join("0" * 4)  # an ARP probe's sender (RFC 5227): speaks for no address
ICMPV6_ROUTER_ADVERTISEMENT, ICMPV6_REDIRECT = "134", "137"


def _rule(action: str, direction: str, priority: str, match: etree._Element) -> etree._Element:
    return E.rule(match, action=action, direction=direction, priority=priority)


def _network(cidr: str) -> tuple[str, str]:
    network = ipaddress.ip_network(cidr, strict=False)
    return str(network.network_address), str(network.prefixlen)


def _guest_sends(spec: FilterSpec) -> list[etree._Element]:
    # $MAC: libvirt fills in the MAC of the NIC the filter is applied to, so one filter serves them all.
    rules = [
        _rule("drop", "out", "-1000", E.mac(match="no", srcmacaddr="$MAC")),
        _rule("drop", "out", _NEVER, E.ip(protocol="udp", srcportstart="67", srcportend="67")),
        _rule("drop", "out", _NEVER, E.ipv6(protocol="udp", srcportstart="547", srcportend="547")),
        _rule("drop", "out", _NEVER, E.ipv6(protocol="icmpv6", type=ICMPV6_ROUTER_ADVERTISEMENT)),
        _rule("drop", "out", _NEVER, E.ipv6(protocol="icmpv6", type=ICMPV6_REDIRECT)),
        _rule("return", "out", _OWN, E.arp(opcode="Request", arpsrcipaddr=UNSPECIFIED_V4)),
    ]
    for address in spec.ipv4:
        rules.append(_rule("return", "out", _OWN, E.arp(arpsrcipaddr=address)))
        rules.append(_rule("return", "out", _OWN, E.ip(srcipaddr=address)))
    own_v6 = [*spec.ipv6, "fe80::/10", "::/128"]  # link-local for neighbour discovery, :: for DAD
    for cidr in own_v6:
        address, length = _network(cidr)
        rules.append(_rule("return", "out", _OWN, E.ipv6(srcipaddr=address, srcipmask=length)))
    rules += [
        _rule("drop", "out", _REST, E.arp()),
        _rule("drop", "out", _REST, E.ip()),
        _rule("drop", "out", _REST, E.ipv6()),
        _rule("drop", "out", _OTHER, E.mac()),  # any other kind of frame (RARP, STP, VLAN tags…)
    ]
    return rules


def _guest_receives(spec: FilterSpec) -> list[etree._Element]:
    rules = []
    for address in [*spec.ipv4, "255.255.255.255"]:
        rules.append(_rule("return", "in", _OWN, E.ip(dstipaddr=address)))
    rules.append(_rule("return", "in", _OWN, E.ip(dstipaddr="224.0.0.0", dstipmask="4")))
    for cidr in [*spec.ipv6, "fe80::/10", "ff00::/8"]:
        address, length = _network(cidr)
        rules.append(_rule("return", "in", _OWN, E.ipv6(dstipaddr=address, dstipmask=length)))
    rules += [_rule("drop", "in", _REST, E.ip()), _rule("drop", "in", _REST, E.ipv6())]
    return rules


# The firewall's iptables priorities: what always passes, the customer's rules in their order, the policy.
_FW_ALWAYS, _FW_RULES, _FW_POLICY = 100, 200, 900
# Router solicitation and advertisement, neighbour solicitation and advertisement.
NEIGHBOUR_DISCOVERY = ("133", "134", "135", "136")
# libvirt's element for each protocol, per family.
_ELEMENTS = {
    "tcp": ("tcp", "tcp-ipv6"),
    "udp": ("udp", "udp-ipv6"),
    "icmp": ("icmp", "icmpv6"),
    "any": ("all", "all-ipv6"),
}


def _fw_rule(action: str, direction: str, priority: int, match: etree._Element, **extra) -> etree._Element:
    return E.rule(match, action=action, direction=direction, priority=str(priority), **extra)


def _allow(rule: FirewallRuleSpec, priority: int) -> list[etree._Element]:
    """One customer rule: new inbound connections that it matches, in one family or both. libvirt's
    state matching lets their replies out (a rule towards the guest accepts NEW and ESTABLISHED)."""
    families = (4, 6)
    if rule.source:
        families = (ipaddress.ip_network(rule.source).version,)
    matches = []
    for family in families:
        attributes = {}
        if rule.source:
            address, length = _network(rule.source)
            attributes.update(srcipaddr=address, srcipmask=length)
        if rule.port_start is not None:
            attributes.update(
                dstportstart=str(rule.port_start), dstportend=str(rule.port_end or rule.port_start)
            )
        element = _ELEMENTS[rule.protocol][0 if family == 4 else 1]
        matches.append(_fw_rule("accept", "in", priority, E(element, **attributes)))
    return matches


def _firewall(firewall: FirewallSpec | None) -> list[etree._Element]:
    """The firewall's rules; none when it lets everything in (no connection tracking for nothing)."""
    if firewall is None or not firewall.default_deny:
        return []
    rules = [
        _fw_rule("accept", "out", _FW_ALWAYS, E.all()),  # the VM's own traffic, and its replies
        _fw_rule("accept", "out", _FW_ALWAYS, E("all-ipv6")),
        _fw_rule("accept", "in", _FW_ALWAYS, E.all(state="ESTABLISHED,RELATED")),
        _fw_rule("accept", "in", _FW_ALWAYS, E("all-ipv6", state="ESTABLISHED,RELATED")),
    ]
    for kind in NEIGHBOUR_DISCOVERY:
        rules.append(_fw_rule("accept", "in", _FW_ALWAYS, E.icmpv6(type=kind), statematch="false"))
    for index, rule in enumerate(firewall.rules):
        rules += _allow(rule, _FW_RULES + index)
    # The policy drops new (and invalid) connections towards the guest only. A drop without a state
    # would be applied by libvirt to every chain of the NIC, both ways: the guest's own neighbour
    # advertisements (which connection tracking leaves untracked) would be dropped, and IPv6 would
    # stop within a minute. With a state, libvirt puts it on the guest's inbound chain alone.
    rules += [
        _fw_rule("drop", "in", _FW_POLICY, E.all(state="NEW,INVALID")),
        _fw_rule("drop", "in", _FW_POLICY, E("all-ipv6", state="NEW,INVALID")),
    ]
    return rules


def filter_xml(spec: FilterSpec, uuid: str | None = None) -> str:
    """The VM's filter: only its own MACs and addresses, both ways, and its firewall (`uuid`: the one it
    already has)."""
    root = E.filter(
        *_guest_sends(spec), *_guest_receives(spec), *_firewall(spec.firewall), name=spec.name, chain="root"
    )
    if uuid:
        root.insert(0, E.uuid(uuid))
    return etree.tostring(root, encoding="unicode", pretty_print=True)
