"""The metrics endpoint's address (`metrics = "127.0.0.1:9464"`, `--metrics ADDR`), checked.

`HOST:PORT` with the host always written out: an empty host would mean every interface, and
whatever is served there (request counts, model names, memory sizes) is meant for the machine's
own Prometheus unless someone decides otherwise, so that decision must be visible in the
config (`0.0.0.0:9464`). IPv6 literals go in brackets (`[::1]:9464`). Port 0 is refused: the
scraper could not know where to look. No scheme, no path: the paths are fixed (/metrics,
/healthz, /readyz).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DEFAULT_PORT = 9464  # the OpenTelemetry Prometheus exporter's port, Triton's is 8002
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


class MetricsAddressError(ValueError):
    """An address the metrics endpoint cannot listen on, with the form it expects."""


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    host: str  # as written, without brackets
    port: int

    @property
    def loopback(self) -> bool:
        """Only this machine can connect (localhost, 127.0.0.0/8, ::1). A host name other than
        localhost counts as not loopback: what it resolves to is not ours to know here."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, path: str = "/metrics") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_metrics_address(text: str) -> MetricsAddress:
    example = f"e.g. \"127.0.0.1:{DEFAULT_PORT}\" (this machine only) or \"0.0.0.0:{DEFAULT_PORT}\" " \
              f"(every interface: see the README's warning)"
    if not isinstance(text, str) or not text.strip():
        raise MetricsAddressError(f"metrics must be HOST:PORT, {example}")
    if "://" in text or "/" in text:
        raise MetricsAddressError(f"metrics must be HOST:PORT without a scheme or path (the endpoint "
                                  f"serves /metrics, /healthz and /readyz), got {text!r}; {example}")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise MetricsAddressError(f"metrics: an IPv6 address is written [ADDRESS]:PORT, e.g. "
                                      f"\"[::1]:{DEFAULT_PORT}\", got {text!r}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise MetricsAddressError(f"metrics: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise MetricsAddressError(f"metrics must be HOST:PORT, got {text!r} (no port); {example}")
        if not host:
            raise MetricsAddressError(f"metrics must name the host to listen on, got {text!r}: an "
                                      f"empty host would listen on every interface; write "
                                      f"\"127.0.0.1{text}\" for this machine only, or \"0.0.0.0{text}\" "
                                      f"to listen everywhere on purpose")
        if ":" in host:
            raise MetricsAddressError(f"metrics: an IPv6 address goes in brackets, e.g. "
                                      f"\"[{host}]:{port_text}\", got {text!r}")
        if host == "*" or not _HOST_NAME.match(host):
            raise MetricsAddressError(f"metrics: {host!r} is not a host name or IP address; {example}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise MetricsAddressError(f"metrics: the port must be 1..65535, got {port_text!r} in {text!r}")
    return MetricsAddress(host, int(port_text))


def metrics_problems(text: str) -> list[str]:
    """The `metrics` key's problems ("" is off: none)."""
    if text == "":
        return []
    try:
        parse_metrics_address(text)
    except MetricsAddressError as exc:
        return [str(exc)]
    return []


def exposure_warning(text: str) -> str | None:
    """A warning for an address other machines can reach, None for loopback (or off/invalid)."""
    if not text:
        return None
    try:
        address = parse_metrics_address(text)
    except MetricsAddressError:
        return None
    if address.loopback:
        return None
    return (f"metrics = \"{text}\" is not a loopback address: anyone who can reach it reads the "
            f"model names, request counts and memory sizes, unauthenticated and unencrypted; "
            f"keep it behind a firewall or use 127.0.0.1 (see the README's Metrics section)")
