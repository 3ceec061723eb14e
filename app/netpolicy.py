"""Where the store may open outbound connections for backfill URLs (`BACKFILL_URL_ALLOW`).

An allow list is a comma-separated list of entries, each one of

- a host name, `vendor.example.com`, or every name under a domain, `*.example.com`;
- an address or CIDR block, `203.0.113.7`, `10.20.0.0/16`, `[2001:db8::1]`, `2001:db8::/32`;

optionally followed by `:port` (IPv6 in brackets), which limits the entry to that port.
The empty list (the default) allows nothing: URL sources are off.

A target (host, port, every address the host resolves to) is allowed when

1. its name matches a host entry, or every one of its addresses lies in an address
   entry; and
2. every address is either public (globally routable unicast) or lies in an address
   entry: loopback, link-local (169.254.0.0/16, the cloud metadata address), private
   ranges, `0.0.0.0`/`::`, multicast and reserved ranges are refused unless an address
   entry names them. IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the
   IPv4 address they carry.

Hosts spelled as numbers other than the dotted quad (`127.1`, `2130706433`,
`0x7f000001`, `0177.0.0.1`) are refused whatever the list says: `is_numeric_spelling`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAME = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,62}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,62}[a-z0-9_])?)*$")


OFF = "URL sources are off (BACKFILL_URL_ALLOW is empty)"


def _numeric(host: str) -> str:
    return f"host {host!r} is a numeric spelling of an address; write a dotted quad or a name"


class PolicyError(ValueError):
    """An allow-list entry cannot be understood; the message names it."""


@dataclass(frozen=True)
class Entry:
    name: str | None  # host name ('*.' prefix: any name under it)
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def name_ok(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and len(host) > len(self.name) - 1
        return host == self.name

    def __str__(self) -> str:
        target = self.name if self.name is not None else str(self.network)
        if self.port is None:
            return target
        return f"[{target}]:{self.port}" if ":" in target else f"{target}:{self.port}"


def effective(address: IPAddress) -> IPAddress:
    """The address as routed: an IPv4-mapped IPv6 address is its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    address = effective(address)
    return address.is_global and not address.is_multicast


def is_numeric_spelling(host: str) -> bool:
    """True for a host that the resolver reads as an IPv4 address but is not a dotted quad."""
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _split_port(raw: str) -> tuple[str, int | None]:
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep:
            raise PolicyError(f"BACKFILL_URL_ALLOW entry {raw!r}: unclosed '['")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise PolicyError(f"BACKFILL_URL_ALLOW entry {raw!r}: expected ':port' after ']'")
        return host, _port(raw, rest[1:])
    if raw.count(":") == 1:
        host, _, port = raw.partition(":")
        return host, _port(raw, port)
    return raw, None  # a bare IPv6 address or CIDR has several colons


def _port(raw: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise PolicyError(f"BACKFILL_URL_ALLOW entry {raw!r}: the port must be 1-65535")
    return int(text)


def parse_entry(raw: str) -> Entry:
    host, port = _split_port(raw.strip())
    host = host.strip().lower().rstrip(".")
    if not host:
        raise PolicyError(f"BACKFILL_URL_ALLOW entry {raw!r} is empty")
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return Entry(None, network, port)
    if is_numeric_spelling(host):
        raise PolicyError(f"BACKFILL_URL_ALLOW entry {raw!r}: write addresses as a dotted quad")
    if not _NAME.match(host):
        raise PolicyError(f"BACKFILL_URL_ALLOW entry {raw!r} is neither a host name nor an address/CIDR")
    return Entry(host, None, port)


@dataclass(frozen=True)
class AllowList:
    entries: tuple[Entry, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> AllowList:
        return cls(tuple(parse_entry(part) for part in raw.split(",") if part.strip()))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __str__(self) -> str:
        return ",".join(map(str, self.entries))

    def _in_networks(self, address: IPAddress, port: int) -> bool:
        address = effective(address)
        for e in self.entries:
            if e.network is not None and e.port_ok(port):
                net = e.network
                if isinstance(net, ipaddress.IPv6Network) and isinstance(address, ipaddress.IPv4Address):
                    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
                    if mapped in net:
                        return True
                elif address.version == net.version and address in net:
                    return True
        return False

    def named(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return any(e.name_ok(host) and e.port_ok(port) for e in self.entries)

    def early_refusal(self, host: str, port: int) -> str | None:
        """Before resolving: why `host:port` cannot be allowed whatever it resolves to, or
        None when it might be (the API refuses early; the worker checks the addresses)."""
        if not self.entries:
            return OFF
        if is_numeric_spelling(host):
            return _numeric(host)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return self.refusal(host, port, [literal])
        if self.named(host, port) or any(e.network is not None and e.port_ok(port) for e in self.entries):
            return None
        return f"{host}:{port} is not in BACKFILL_URL_ALLOW"

    def refusal(self, host: str, port: int, addresses: list[IPAddress]) -> str | None:
        """None when the target is allowed, else why not (no address is echoed)."""
        if not self.entries:
            return OFF
        if is_numeric_spelling(host):
            return _numeric(host)
        if not addresses:
            return f"host {host!r} has no address"
        covered = all(self._in_networks(a, port) for a in addresses)
        if not (self.named(host, port) or covered):
            return f"{host}:{port} is not in BACKFILL_URL_ALLOW"
        for a in addresses:
            if not is_public(a) and not self._in_networks(a, port):
                return f"{host}:{port} resolves to a non-public address that BACKFILL_URL_ALLOW does not name"
        return None
