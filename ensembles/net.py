"""Where outbound HTTP calls may go, and a POST that keeps to it.

An endpoint member's or a webhook's URL comes from whoever registered it, so a call to it must not
reach what only the server can reach: loopback, private and link-local networks, or the services the
caller itself runs on (its database, its queue). A name is resolved once per connection, every address
it resolves to is checked, and the socket is opened to a checked address, so a name that resolves to
a public address when checked and to a private one when connected (DNS rebinding) gets nowhere.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from ensembles.errors import EnsembleError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# The largest answer read from a call that worked, and how much of a failed call's body is kept.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
ERROR_BYTES = 2048
SNIPPET_CHARS = 200

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


class OutboundRefused(EnsembleError):
    """A call would go somewhere the policy does not allow; trying again cannot help."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver); OSError when it does not."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_allowed(entries: Iterable[str]) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    """Split allow-list entries into networks (``10.0.0.0/8``, ``192.168.1.5``, ``::1``) and host names.

    Raises ValueError naming the first entry that is neither.
    """
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for raw in entries:
        entry = raw.strip().strip("[]").lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = entry.rstrip(".")
        if not _HOST_NAME.match(name):
            raise ValueError(f"{raw!r} is neither a host name nor an address or CIDR network")
        hosts.add(name)
    return tuple(networks), frozenset(hosts)


def _plain(ip: IPAddress) -> IPAddress:
    # ::ffff:127.0.0.1 reaches 127.0.0.1: judge it as what it reaches.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _kind(ip: IPAddress) -> str:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    return "reserved or shared"


@dataclass(frozen=True)
class OutboundPolicy:
    """Public addresses, plus the listed networks and host names; never a listed service's port.

    The default allows loopback too, for a server of one's own on this machine. ``services`` are
    ``(host, port)`` pairs of what the caller itself runs (its database, Redis, web server): that port
    is refused on loopback and on the addresses of that host, whatever else is allowed.
    """

    allow_networks: tuple[IPNetwork, ...] = LOOPBACK
    allow_hosts: frozenset[str] = frozenset()
    services: tuple[tuple[str, int], ...] = ()
    # None: :func:`resolve`, looked up at each call.
    resolver: Callable[[str, int], list[str]] | None = field(default=None, compare=False)

    @classmethod
    def configured(
        cls,
        allow: Iterable[str],
        *,
        services: Iterable[tuple[str, int]] = (),
        resolver: Callable[[str, int], list[str]] | None = None,
    ) -> OutboundPolicy:
        """A policy from allow-list entries (networks and host names, as :func:`parse_allowed` reads them)."""
        networks, hosts = parse_allowed(allow)
        return cls(networks, hosts, tuple(services), resolver)

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses a connection to ``host:port`` may use: all of them, or OutboundRefused.

        Every address the name resolves to must pass, so one name cannot mix a public address with an
        internal one. OSError when the name does not resolve.
        """
        name = host.strip("[]").lower().rstrip(".")
        try:
            found = [str(ipaddress.ip_address(name))]
        except ValueError:
            found = self._resolve(name, port)
            if not found:
                raise OSError(f"{name} resolves to no address") from None
        for address in found:
            self._check(name, _plain(ipaddress.ip_address(address)), port)
        return found

    def check_url(self, url: str) -> None:
        """Refuse ``url`` now if it goes somewhere not allowed (OutboundRefused).

        A name that does not resolve passes: every connection is checked again when it is made.
        """
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise OutboundRefused(f"{url!r} is not a URL: {exc}") from None
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise OutboundRefused(f"{url!r} is not an http(s) URL with a host")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            self.addresses(target.raw_host.decode("ascii"), port)
        except OSError:
            pass

    def _resolve(self, host: str, port: int) -> list[str]:
        return (self.resolver or resolve)(host, port)

    def _check(self, name: str, ip: IPAddress, port: int) -> None:
        shown = f"[{name}]" if ":" in name else name
        where = f"{shown}:{port}" if name == str(ip) else f"{shown}:{port} ({ip})"
        if self._is_service(ip, port):
            raise OutboundRefused(f"{where} is one of this server's own services")
        if ip.is_global and not ip.is_multicast:
            return
        if name in self.allow_hosts or any(ip in network for network in self.allow_networks):
            return
        raise OutboundRefused(
            f"{where} is not a public address ({_kind(ip)}); calls go only to public addresses and to "
            f"the hosts and networks the operator allows"
        )

    def _is_service(self, ip: IPAddress, port: int) -> bool:
        for host, service_port in self.services:
            if port != service_port:
                continue
            if ip.is_loopback or ip.is_unspecified:
                return True
            try:
                addresses = [str(ipaddress.ip_address(host))]
            except ValueError:
                try:
                    addresses = self._resolve(host, port)
                except OSError:
                    continue
            if any(_plain(ipaddress.ip_address(a)) == ip for a in addresses):
                return True
        return False


class _GuardedNetwork(httpcore.SyncBackend):
    """Opens each connection to an address the policy allowed, resolved here once."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        # Each address in turn, as socket.create_connection would; the last one's failure is the answer.
        # The URL keeps its host name, so the Host header and TLS (SNI, certificate) still name it.
        for address in addresses[:-1]:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError:
                continue
        return super().connect_tcp(addresses[-1], port, timeout, local_address, socket_options)


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every connection, redirects' included, keeps to ``policy``."""

    def __init__(self, policy: OutboundPolicy) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is replaced by one that checks each connection.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_GuardedNetwork(policy)
        )


def guarded_client(policy: OutboundPolicy, *, timeout: float, follow_redirects: bool = False) -> httpx.Client:
    """An httpx client for calls to URLs someone else chose (no proxies or .netrc from the environment)."""
    return httpx.Client(
        transport=GuardedTransport(policy), timeout=timeout, follow_redirects=follow_redirects, trust_env=False
    )


@dataclass(frozen=True)
class Answer:
    """A server's status and the start of its body: up to ``max_bytes`` of a 2xx, ERROR_BYTES of anything else."""

    status: int
    body: bytes
    truncated: bool = False  # the server said more than was read

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def snippet(self) -> str:
        """The start of the body, fit to show to whoever made the call."""
        return snippet(self.body)


def post_json(
    url: str,
    payload: Any,
    *,
    policy: OutboundPolicy,
    timeout: float,
    headers: dict[str, str] | None = None,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> Answer:
    """POST ``payload`` as JSON to ``url`` within ``policy``; a redirect is an answer, not followed.

    Never reads more of the body than the answer keeps. Raises OutboundRefused, or httpx's
    TimeoutException and TransportError.
    """
    with (
        guarded_client(policy, timeout=timeout) as client,
        client.stream("POST", url, json=payload, headers=headers) as response,
    ):
        limit = max_bytes if 200 <= response.status_code < 300 else ERROR_BYTES
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                return Answer(response.status_code, bytes(body[:limit]), truncated=True)
        return Answer(response.status_code, bytes(body))


def snippet(raw: bytes | str, limit: int = SNIPPET_CHARS) -> str:
    """Printable text from the start of ``raw``: control characters become spaces, at most ``limit`` chars."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
