"""URLs as they may be recorded or shown: no credentials.

A base URL may carry ``user:pass@`` or a token in its query (``?api_key=...``); the request needs them,
the ledger, the fingerprint, the report and error messages must not. :func:`public_url` keeps the
scheme, host, path and harmless query parameters and replaces the rest with ``***``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
_SECRET_PARAM = re.compile(r"(key|token|secret|pass|pwd|auth|sig|credential|session)", re.IGNORECASE)


def public_url(url: str) -> str:
    """``url`` without user info and with secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number, too
    except ValueError:
        return REDACTED  # unparseable: show nothing rather than a secret
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if port is not None:
        host = f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        host = f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    netloc = host if (parts.netloc or host) else ""
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            query,
            REDACTED if parts.fragment and _SECRET_PARAM.search(parts.fragment) else parts.fragment,
        )
    )


def public_source(source: str) -> str:
    """A teacher source (``openai:<url>#<model>``, ``hf:<path>``...) with any URL in it made public."""
    scheme, sep, rest = source.partition(":")
    if scheme != "openai" or not sep:
        return source
    base, hash_sign, model = rest.rpartition("#")
    if not hash_sign:
        return f"{scheme}:{public_url(rest)}"
    return f"{scheme}:{public_url(base)}#{model}"
