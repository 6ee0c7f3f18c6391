"""Who may use the gateway: bearer tokens and API keys, checked in constant time.

A client presents one secret, either as `Authorization: Bearer <token>` or as
`X-API-Key: <key>` (WebSocket clients may also use `?token=<token>`, gateway/guard.py).
Every configured secret is accepted in both places: a "token" and an "API key" differ only
in the header that carries them.

Secrets come from `settings.tokens` (MUNGGOGGO_GATEWAY_TOKENS, comma-separated, or
`--token`) and from `settings.tokens_file` (one a line; blank lines and `#` comments
ignored), read when a worker starts. A secret is 1 to 4096 visible ASCII characters without
commas (so any of them can also travel in the comma-separated variable). No error message
or log line ever contains a secret: problems are reported by position ("token 2", "line 7").

The check hashes what the client sent and compares the SHA-256 digest with the digest of
every configured secret with `hmac.compare_digest`, without stopping at a match: the time
taken depends neither on which secret matched nor on how long the secrets are (comparing
the raw strings would leak their lengths).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import GatewaySettings

log = logging.getLogger("munggoggo.gateway.auth")

MISSING = "missing credentials"
INVALID = "invalid credentials"
MAX_TOKEN = 4096
SHORT_TOKEN = 16  # fewer characters than this is guessable; we warn (by position)
_BEARER = b"bearer"


class Unauthorized(Exception):
    """The request carries no accepted credentials. `cause` is MISSING or INVALID."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


# -- configuration -----------------------------------------------------------------


def load_tokens(settings: GatewaySettings) -> tuple[str, ...]:
    """Every secret from the settings and the tokens file, checked; ValueError (naming the
    place, never the secret) for a bad one, OSError for a file that cannot be read."""
    tokens: list[str] = []
    for i, token in enumerate(settings.tokens, 1):
        problem = token_problem(token)
        if problem:
            raise ValueError(f"token {i} of MUNGGOGGO_GATEWAY_TOKENS / --token {problem}")
        tokens.append(token)
    if settings.tokens_file:
        from_file = read_tokens_file(settings.tokens_file)
        if not from_file:
            # An empty file would silently leave the gateway open to anyone.
            raise ValueError(f"the tokens file {settings.tokens_file} contains no tokens")
        tokens.extend(from_file)
    for i, token in enumerate(tokens, 1):
        if len(token) < SHORT_TOKEN:
            log.warning(
                "gateway token %d is only %d characters long: use at least 32 random ones "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                i,
                len(token),
            )
    return tuple(dict.fromkeys(tokens))


def read_tokens_file(path: str) -> list[str]:
    """The secrets in a tokens file: one a line, `#` starts a comment."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="ascii") as file:
            lines = file.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"the tokens file {path} is not ASCII text") from None
    except OSError as exc:
        raise OSError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("the tokens file %s can be read by other users (chmod 600 it)", path)
    tokens = []
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) > 1 and not words[1].startswith("#"):
            raise ValueError(f"{path} line {number}: a token cannot contain spaces")
        problem = token_problem(words[0])
        if problem:
            raise ValueError(f"{path} line {number}: the token {problem}")
        tokens.append(words[0])
    return tokens


def token_problem(token: str) -> str | None:
    """Why `token` cannot be a secret, or None. Never includes the token."""
    if not token:
        return "is empty"
    if len(token) > MAX_TOKEN:
        return f"is longer than {MAX_TOKEN} characters"
    if "," in token:
        return "contains a comma"
    if not all("!" <= c <= "~" for c in token):
        return "contains a space, a control or a non-ASCII character"
    return None


# -- the check ---------------------------------------------------------------------


class TokenSet:
    """The accepted secrets, kept as SHA-256 digests only."""

    __slots__ = ("_digests",)

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(hashlib.sha256(t.encode("ascii")).digest() for t in tokens)

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: bytes) -> bytes | None:
        """The digest of `presented` when it is one of the secrets (a key that names the
        client without holding its secret), else None. Constant time: every digest is
        compared, whatever matched before."""
        digest = hashlib.sha256(presented).digest()
        found = False
        for candidate in self._digests:
            found |= hmac.compare_digest(digest, candidate)
        return digest if found else None

    def check(
        self, authorization: bytes | None, api_key: bytes | None, query_token: bytes | None = None
    ) -> bytes:
        """The client's key for the credentials it presented; Unauthorized otherwise.

        The Authorization header wins over X-API-Key, which wins over the query token: a
        client that sends a wrong header is refused even if another place is right, so a
        mistake is not hidden."""
        if authorization is not None:
            scheme, _, presented = authorization.strip().partition(b" ")
            if scheme.lower() != _BEARER:
                # The scheme is not echoed: a misdirected "Basic" header holds a password.
                raise Unauthorized(INVALID, "use Authorization: Bearer <token> or X-API-Key")
            presented = presented.strip()
        elif api_key is not None:
            presented = api_key.strip()
        elif query_token is not None:
            presented = query_token
        else:
            raise Unauthorized(MISSING, "send Authorization: Bearer <token> or X-API-Key: <key>")
        key = self.match(presented) if presented else None
        if key is None:
            raise Unauthorized(INVALID, "the token or API key is not accepted by this gateway")
        return key
