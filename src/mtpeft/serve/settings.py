"""What `mtpeft serve` accepts and how it batches: one frozen dataclass, torch-free.

Every limit is named in the 4xx error a client gets when it crosses it, with the flag that raises it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

# Host names a server bound to loopback answers to (any port). Anything else is refused: a web page can
# point a name it controls at 127.0.0.1 (DNS rebinding) and would otherwise read every answer.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # every interface: no one name that clients use


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request over any of them is refused before it reaches the model."""

    max_body_bytes: int = 1_000_000  # --max-body-bytes
    max_snippets: int = 64  # --max-snippets: snippets (or pairs, or queries) in one request
    max_chars: int = 20_000  # --max-chars: characters of one snippet, pair side or query
    max_k: int = 100  # --max-k: search results per query
    max_new_tokens: int = 256  # --max-new-tokens: generated tokens per reply (/v1/generate, chat completions)
    max_wait_s: float = 60.0  # --max-wait-s: seconds a request may wait for the model before a 503


@dataclass(frozen=True)
class Batching:
    """Micro-batching: concurrent requests gathered into one backbone pass.

    The worker takes the first waiting request, then keeps gathering for at most `max_wait_ms` while the
    batch holds fewer than `max_snippets` snippets and fewer than `max_tokens` (estimated) tokens.
    `enabled=False` answers one request per pass (the comparison the load test makes).
    """

    enabled: bool = True
    max_wait_ms: float = 5.0  # --batch-wait-ms
    max_snippets: int = 64  # --batch-snippets
    max_tokens: int = 16_384  # --batch-tokens: estimated tokens gathered into one batch
    # --pass-tokens: padded tokens per backbone forward. A gathered batch is encoded longest first in
    # passes of at most this many (rows x longest row): similar lengths share a pass, so padding stays
    # small. 1024 was the fastest of 1024, 2048 and 4096 on a 2-core CPU (docs/performance.md); raise
    # it on a GPU.
    pass_tokens: int = 1024
    max_queue: int = 1024  # requests waiting; beyond it the server answers 429 (busy), never 5xx

    def __post_init__(self) -> None:
        for name in ("max_snippets", "max_tokens", "pass_tokens", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")


def allowed_hosts(bind_host: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names to answer (patterns for Starlette's TrustedHostMiddleware): loopback, the address
    the server is bound to when it is a name or a single address, and `extra` (--allowed-hosts; '*' is
    any, '*.example.com' any subdomain). Raises ValueError naming a pattern it cannot use."""
    hosts = list(LOOPBACK_HOSTS)
    if bind_host.strip("[]") not in WILDCARD_BINDS:
        hosts.append(host_pattern(bind_host))
    hosts += [host_pattern(name) for name in extra]
    return list(dict.fromkeys(hosts))


def host_pattern(name: str) -> str:
    """One host name as the Host header carries it: lower case, an IPv6 address in brackets, no port."""
    bare = name.strip().lower()
    try:
        return f"[{ipaddress.IPv6Address(bare.strip('[]'))}]"
    except ValueError:
        pass
    wildcard_ok = bare == "*" or "*" not in bare or (bare.startswith("*.") and "*" not in bare[1:])
    if not bare or not wildcard_ok or any(char in bare for char in ":/ "):
        raise ValueError(f"{name!r} is not a host name (give one like example.com, *.example.com or '*')")
    return bare
