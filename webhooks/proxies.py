"""Who sent a request, behind TRUSTED_PROXIES reverse proxies (nginx in front of gunicorn).

Each proxy appends its peer's address to X-Forwarded-For (and sets X-Forwarded-Proto), so with
N trusted proxies the client is the N-th value from the right; anything further left was
written by the client and is never trusted. With no trusted proxies the socket's peer is the
client and the headers are ignored.
"""

from __future__ import annotations

import ipaddress

from flask import request

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def forwarded(value: str | None, trusted_proxies: int) -> str | None:
    """The value the outermost trusted proxy saw, from a comma-separated forwarding header."""
    hops = [hop.strip() for hop in (value or "").split(",") if hop.strip()]
    if trusted_proxies <= 0 or len(hops) < trusted_proxies:
        return None
    return hops[-trusted_proxies]


def client_ip(remote_addr: str | None, forwarded_for: str | None,
              trusted_proxies: int) -> IpAddress | None:
    """The address the request came from; None when unknown or malformed."""
    raw = forwarded(forwarded_for, trusted_proxies) if trusted_proxies > 0 else remote_addr
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def request_ip(trusted_proxies: int) -> IpAddress | None:
    """`client_ip` of the current Flask request."""
    return client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                     trusted_proxies)


def came_over_tls(trusted_proxies: int) -> bool:
    """True when the client's connection was TLS (directly, or to the trusted proxy)."""
    if request.is_secure:
        return True
    proto = forwarded(request.headers.get("X-Forwarded-Proto"), trusted_proxies)
    return (proto or "").lower() == "https"
