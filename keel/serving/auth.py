"""API keys: read once from the environment, kept only as sha256 digests, compared in constant
time. A key is sent in the `X-API-Key` header, or (for people opening the dashboard in a
browser) as the password of HTTP Basic authentication."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["API_KEY_HEADER", "ApiKeys", "basic_password"]

API_KEY_HEADER = "X-API-Key"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """The accepted keys, as sha256 digests only (the keys themselves are not kept)."""

    def __init__(self, digests: list[bytes]) -> None:
        """Hold digests made by `from_env_value` (use that to build one)."""
        self._digests = tuple(digests)

    @classmethod
    def from_env_value(cls, value: str | None) -> ApiKeys:
        """Parse `KEEL_API_KEYS`: comma-separated keys; blanks around them are ignored.

        Raises:
            ValueError: No key is given (the message never repeats a key).
        """
        keys = [k.strip() for k in (value or "").split(",") if k.strip()]
        if not keys:
            raise ValueError(
                "no API key configured: set KEEL_API_KEYS (comma-separated keys), or set "
                "api.require_key: false in params.yaml for local use without keys"
            )
        return cls([_digest(k) for k in keys])

    def __len__(self) -> int:
        """How many keys are accepted."""
        return len(self._digests)

    def __repr__(self) -> str:
        """Never show the digests either."""
        return f"ApiKeys({len(self)} keys)"

    def accepts(self, key: str | None) -> bool:
        """Whether `key` is one of the keys, in time independent of which one and of where
        it differs (every digest is compared, none is skipped)."""
        if not key:
            return False
        presented = _digest(key)
        match = False
        for digest in self._digests:
            match |= hmac.compare_digest(digest, presented)
        return match


def basic_password(authorization: str | None) -> str | None:
    """The password of an HTTP Basic `Authorization` header (the user name is ignored)."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None
