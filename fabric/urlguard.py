"""The URL import guard: which URLs and which addresses a node may fetch an image from.

Theory of operation
-------------------
URL import makes a node send a GET wherever a user points it, so unguarded it reaches
what only the node can reach: its own ``/metrics``, a peer's API, a cloud metadata
service, anything on the node's private network (server-side request forgery). The guard
decides on the address a connection would really go to, never on how the URL looks:

1. ``check_url``: the scheme is http or https, the host is ASCII, the port a port;
   ``Target`` is what the fetcher connects to.
2. ``check_address``, for every address the host resolves to (and for every redirect
   hop again): refuse the cluster's own nodes (their host and port from the config and
   membership) always; allow what the allow-list opens (a host name, or a range holding
   the address); refuse every address that is not plainly public — loopback, link-local,
   private and unique-local, carrier-grade NAT, multicast, unspecified, reserved and
   documentation ranges, and IPv6 outside global unicast. IPv6 forms that carry an IPv4
   address (mapped, translated, NAT64, 6to4) are judged by that IPv4 address.

The fetcher runs the check where it connects (its resolver filters the addresses it
hands to the socket), so a name cannot resolve to one address for the check and to
another for the connection. This module is pure: it is given hosts and addresses and
returns refusals as values; resolving and connecting are the runtime's.

``shown_url`` is how an import's URL may be stored and shown: no credentials, no query
values (they often carry tokens), no fragment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
ALLOW_HINT = "allow it with [import] allow in the config"
REDACTED = "REDACTED"

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_CLASSES: tuple[tuple[IPNetwork, str], ...] = (
    # First match wins: the specific classes before the ranges that hold them.
    (_V4("0.0.0.0/32"), "unspecified"),
    (_V4("0.0.0.0/8"), "reserved: this network"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "reserved: broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
    (_V4("192.0.0.0/24"), "reserved: protocol assignments"),
    (_V4("192.0.2.0/24"), "reserved: documentation"),
    (_V4("198.51.100.0/24"), "reserved: documentation"),
    (_V4("203.0.113.0/24"), "reserved: documentation"),
    (_V4("198.18.0.0/15"), "reserved: benchmarking"),
    (_V4("192.88.99.0/24"), "reserved: 6to4 relay"),
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "private: site-local"),
    (_V6("fc00::/7"), "private: unique local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "private: local NAT64"),
    (_V6("2001::/23"), "reserved: protocol assignments"),
    (_V6("2001:db8::/32"), "reserved: documentation"),
    (_V6("3fff::/20"), "reserved: documentation"),
    (_V6("5f00::/16"), "reserved: segment routing"),
)
_GLOBAL_UNICAST_V6 = _V6("2000::/3")

_NAT64 = _V6("64:ff9b::/96")
_TRANSLATED = _V6("::ffff:0:0:0/96")
_SIX_TO_FOUR = _V6("2002::/16")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the guard refuses a URL or an address (``message`` is for the user)."""

    subject: str
    """The address, URL part or node refused."""
    reason: str
    hint: str = ALLOW_HINT

    @property
    def message(self) -> str:
        tail = f"; {self.hint}" if self.hint else ""
        return f"refusing {self.subject} ({self.reason}){tail}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL makes the fetcher connect."""

    scheme: str
    host: str
    """Lower case, without brackets or a trailing dot."""
    port: int
    literal: IPAddress | None
    """The address when the host is written as one (no resolution happens)."""


def host_target(host: str, port: int) -> Target:
    """The target of a connection to ``host`` (a name) and ``port``, as a resolver sees it."""
    return Target("", host.lower().rstrip("."), port, None)


@dataclass(frozen=True, slots=True)
class OwnNode:
    id: str
    host: str
    port: int


def allow_entry_problem(entry: object) -> str | None:
    """What is wrong with one ``[import] allow`` entry, or None: the config's check."""
    if not isinstance(entry, str) or not entry:
        return f"each entry must be a host name or an address range, not {entry!r}"
    try:
        _parse_entry(entry)
    except ValueError as exc:
        return str(exc)
    return None


def _parse_entry(entry: str) -> IPNetwork | str:
    """An address range, or a host name (lower case; ``*.`` opens its subdomains)."""
    if "/" in entry or _address(entry) is not None:
        try:
            return ipaddress.ip_network(entry.strip("[]"), strict=True)
        except ValueError as exc:
            if "has host bits set" in str(exc):
                loose = ipaddress.ip_network(entry, strict=False)
                raise ValueError(f"{entry!r} has host bits set; did you mean {loose}?") from None
            raise ValueError(f"{entry!r} is not an address range: {exc}") from None
    name = entry.lower().rstrip(".")
    bare = name.removeprefix("*.")
    if len(bare) > 253 or not all(_LABEL.match(label) for label in bare.split(".")):
        raise ValueError(f"{entry!r} is neither a host name nor an address range")
    return name


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries, when connecting to it may reach that one."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _TRANSLATED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not plainly public, or None if it is."""
    inner = embedded_v4(address)
    if inner is not None:
        why = classify(inner)
        return f"{why}, in IPv6 form" if why else None
    for network, reason in _CLASSES:
        if address.version == network.version and address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address):
        return None if address in _GLOBAL_UNICAST_V6 else "reserved"
    return None if address.is_global else "reserved"


class UrlGuard:
    """The decisions for one cluster: its allow-list and its nodes."""

    def __init__(
        self,
        allow: Sequence[str] = (),
        nodes: Sequence[OwnNode] = (),
        node_addresses: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``allow``: the ``[import] allow`` entries, already checked by the config;
        ``node_addresses``: what node host names resolved to (the runtime looks up
        ``node_names``)."""
        self.allow = tuple(allow)
        self.nodes = tuple(nodes)
        self.node_addresses = dict(node_addresses or {})
        entries = [_parse_entry(e) for e in self.allow]
        self._networks = [e for e in entries if not isinstance(e, str)]
        self._hosts = {e for e in entries if isinstance(e, str)}

    def knowing(self, resolved: Mapping[str, Sequence[str]]) -> UrlGuard:
        """This guard, told what the node host names resolve to."""
        return UrlGuard(self.allow, self.nodes, {**self.node_addresses, **resolved})

    def node_names(self) -> set[str]:
        """Node hosts that are names, not addresses: the runtime resolves them so a node
        is recognised by address too."""
        return {n.host.lower().rstrip(".") for n in self.nodes if _address(n.host) is None}

    def check_url(self, url: str) -> Target | Refusal:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return Refusal("the URL", f"not a valid URL: {exc}", hint="")
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            return Refusal(f"{scheme or 'a'} URL", "only http and https are imported", hint="")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return Refusal("the URL", "it names no host", hint="")
        if not host.isascii():
            return Refusal(host, "write a non-ASCII host name in its xn-- form", hint="")
        if port is None:
            port = 443 if scheme == "https" else 80
        return Target(scheme, host, port, _address(host))

    def check_address(self, target: Target, address: str | IPAddress) -> Refusal | None:
        """Whether the fetcher may connect to ``address`` for ``target``."""
        addr = address if not isinstance(address, str) else _address(address)
        if addr is None:
            return Refusal(str(address), "not an IP address", hint="")
        node = self._own_node(target, addr)
        if node is not None:
            return Refusal(
                f"{_show(addr)}:{target.port}",
                f"node {node.id} of this cluster",
                hint="a node never imports from the cluster's own nodes",
            )
        if self._allowed(target.host, addr):
            return None
        reason = classify(addr)
        return Refusal(_show(addr), reason) if reason else None

    def admit(self, target: Target, addresses: Iterable[str]) -> list[str] | Refusal:
        """The addresses a connection to ``target`` may use, in their order; the first
        refusal when none may (a name that resolves to nothing is refused too)."""
        allowed: list[str] = []
        first: Refusal | None = None
        for address in addresses:
            refusal = self.check_address(target, address)
            if refusal is None:
                allowed.append(address)
            elif first is None:
                first = refusal
        if allowed:
            return allowed
        return first or Refusal(target.host, "it resolves to no address", hint="")

    def check_literal(self, url: str) -> Refusal | None:
        """What can be refused before any resolution: the URL, and the address when the
        host is written as one (the API answers these at once)."""
        target = self.check_url(url)
        if isinstance(target, Refusal):
            return target
        return self.check_address(target, target.literal) if target.literal else None

    # --- the leaves --------------------------------------------------------------------------
    def _own_node(self, target: Target, addr: IPAddress) -> OwnNode | None:
        plain = embedded_v4(addr) or addr
        for node in self.nodes:
            if node.port != target.port:
                continue
            name = node.host.lower().rstrip(".")
            if name == target.host:
                return node
            if plain in self._node_ips(name):
                return node
            literal = _address(name)
            if literal is not None and literal.is_unspecified:
                return node  # it listens on every address of its host: which are those?
            if name == "localhost" and plain.is_loopback:
                return node
        return None

    def _node_ips(self, name: str) -> set[IPAddress]:
        literal = _address(name)
        if literal is not None:
            return {embedded_v4(literal) or literal}
        found = (_address(a) for a in self.node_addresses.get(name, ()))
        return {embedded_v4(a) or a for a in found if a is not None}

    def _allowed(self, host: str, addr: IPAddress) -> bool:
        host = host.lower().rstrip(".")
        if host in self._hosts:
            return True
        if any(h.startswith("*.") and host.endswith(h[1:]) for h in self._hosts):
            return True
        inner = embedded_v4(addr)
        forms = [addr] if inner is None else [addr, inner]
        return any(a.version == n.version and a in n for a in forms for n in self._networks)


def _show(addr: IPAddress) -> str:
    return f"[{addr}]" if addr.version == 6 else str(addr)


def guard_for(allow: Iterable[str], nodes: Iterable[tuple[str, str, int]]) -> UrlGuard:
    """A guard from the config's allow-list and the cluster's (id, host, port) nodes."""
    return UrlGuard(tuple(allow), tuple(OwnNode(*n) for n in nodes))


def shown_url(url: str) -> str:
    """``url`` as it may be stored and shown: no user:password, query values redacted,
    no fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(_redact(p) for p in parts.query.split("&")) if parts.query else ""
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()


def _redact(param: str) -> str:
    name, eq, _ = param.partition("=")
    return f"{name}={REDACTED}" if eq else REDACTED


def scrub(message: str, url: str) -> str:
    """``message`` (say, an error from the HTTP client) with ``url``'s secrets replaced by
    the parts ``shown_url`` keeps."""
    parts = urlsplit(url)
    message = message.replace(url, shown_url(url))
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        message = message.replace(userinfo + "@", "")
    if parts.query:
        message = message.replace(parts.query, urlsplit(shown_url(url)).query)
    return message
