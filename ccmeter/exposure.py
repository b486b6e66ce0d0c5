"""Is the proxy reachable from other machines? (pure: addresses in, a warning out)

``mitmdump`` without ``--listen-host`` binds every interface: anyone on the network can then
send calls through the meter, which records them (and their cost) as this user's. ``ccmeter
run`` and ``serve`` listen on 127.0.0.1; the addon warns when mitmproxy listens anywhere
else, so a plain ``mitmdump -s`` line copied without ``--listen-host`` does not go unnoticed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

ALL_INTERFACES = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; every other address (and "every interface") is not."""
    host = host.strip().strip("[]").split("%")[0].lower()
    if host in ALL_INTERFACES:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def exposed(addrs: Iterable[Sequence[Any]]) -> list[str]:
    """``host:port`` of each listening address that is not loopback (mitmproxy's
    ``listen_addrs()``: ``('0.0.0.0', 8080)``, ``('::', 8080, 0, 0)``)."""
    found = []
    for addr in addrs:
        host, port = str(addr[0]), addr[1]
        if not is_loopback(host):
            shown = "*" if host in ALL_INTERFACES else (f"[{host}]" if ":" in host else host)
            found.append(f"{shown}:{port}")
    return list(dict.fromkeys(found))


def warning(where: Sequence[str]) -> str:
    """The log line for a proxy that listens beyond this machine."""
    return (f"ccmeter: the proxy listens on {', '.join(where)}, not only on this machine: "
            "anyone who can reach it can send calls through it, and they are metered (and "
            "capped) as yours. Start mitmdump with --listen-host 127.0.0.1 (ccmeter run and "
            "ccmeter serve do)")


def exposed_text(listen: str | None) -> list[str]:
    """:func:`exposed` for the listen text a proxy's status file keeps (see
    ``ccmeter.proxies.listen_text``: ``0.0.0.0:8080, :::8080``)."""
    addrs = []
    for part in (listen or "").split(","):
        host, sep, port = part.strip().rpartition(":")
        if sep and port.isdigit():
            addrs.append((host, int(port)))
    return exposed(addrs)
