"""Personal data handling at the edge: hash identifiers, truncate addresses.

Pure functions, applied by the collector before it produces an event and by
the worker right after decoding, so raw e-mail addresses, phone numbers and
full IP addresses are never stored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import TypeVar

from schemas.common import Envelope

EventT = TypeVar("EventT", bound=Envelope)

_PHONE_NOISE = re.compile(r"[\s().\-/]")
#: Prefix lengths kept of an address: the last octet of IPv4, and all but the
#: first 48 bits of IPv6, are zeroed, as common analytics IP anonymisation does.
IPV4_KEEP_BITS = 24
IPV6_KEEP_BITS = 48


def salted_sha256(value: str, salt: str) -> str:
    """Hash ``salt + value`` with SHA-256; hex digest."""
    return hashlib.sha256((salt + value).encode("utf-8")).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def normalise_phone(phone: str) -> str:
    """Keep digits and a leading plus: '+31 (0)6-1234' -> '+31061234'."""
    return _PHONE_NOISE.sub("", phone.strip())


#: The well-known NAT64 prefix (RFC 6052): its last 32 bits are the IPv4 address.
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


def truncate_ip(address: str) -> str:
    """Zero the host part of an address: 203.0.113.77 -> 203.0.113.0.

    Some IPv6 addresses carry an IPv4 client's address, and are truncated as
    that IPv4 address. These are IPv4-mapped ones (::ffff:203.0.113.77, as a
    dual-stack socket reports an IPv4 client), NAT64 ones
    (64:ff9b::203.0.113.77) and 6to4 ones (2002:cb00:714d::/48, whose first 48
    bits hold the whole IPv4 address). Truncated as IPv6, a 6to4 address would
    keep the client's IPv4 address, and the other two would all become one.
    """
    parsed: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        elif parsed.sixtofour is not None:
            parsed = parsed.sixtofour
        elif parsed in _NAT64_PREFIX:
            parsed = ipaddress.IPv4Address(int(parsed) & 0xFFFFFFFF)
    keep_bits = IPV4_KEEP_BITS if parsed.version == 4 else IPV6_KEEP_BITS
    network = ipaddress.ip_network(f"{parsed}/{keep_bits}", strict=False)
    return str(network.network_address)


def protect(event: EventT, salt: str) -> EventT:
    """Return the event with e-mail and phone replaced by salted hashes and the IP truncated."""
    changes: dict[str, object] = {}
    if event.email is not None:
        changes["email_sha256"] = salted_sha256(normalise_email(event.email), salt)
        changes["email"] = None
    if event.phone is not None:
        changes["phone_sha256"] = salted_sha256(normalise_phone(event.phone), salt)
        changes["phone"] = None
    if event.ip is not None:
        truncated = truncate_ip(event.ip)
        if truncated != event.ip:
            changes["ip"] = truncated
    if not changes:
        return event
    return event.model_copy(update=changes)


#: Field names whose values are removed from a raw payload before it is kept in a dead letter.
PERSONAL_FIELDS = ("email", "phone", "ip", "user_agent")
