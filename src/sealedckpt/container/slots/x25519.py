"""X25519 recipient slots (type 2), as age's X25519 stanza: no recipient identifier is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ... import crypto
from ...crypto import KEY_SIZE, TAG_SIZE, X25519_SIZE, PQRecipientKey, RecipientKey, RecipientPublicKey
from ...errors import FormatError
from .base import KnownSlot, OpenKey, SealKey

_AAD = b"sealedckpt/v1 x25519 slot\x00"
BODY_SIZE = X25519_SIZE + KEY_SIZE + TAG_SIZE  # ephemeral share, wrapped DEK + tag


@dataclass(frozen=True)
class X25519Slot(KnownSlot):
    TYPE = 2
    kind = "recipient"
    seal_key = RecipientPublicKey
    open_key = RecipientKey

    share: bytes
    wrapped: bytes

    @property
    def body(self) -> bytes:
        return self.share + self.wrapped

    @classmethod
    def parse(cls, body: bytes) -> X25519Slot:
        if len(body) != BODY_SIZE:
            raise FormatError(f"X25519 key slot body is {len(body)} bytes, expected {BODY_SIZE}")
        return cls(body[:X25519_SIZE], body[X25519_SIZE:])

    @classmethod
    def wrap(cls, key: SealKey, dek: bytes, salt: bytes, random_bytes: Callable[[int], bytes]) -> X25519Slot:
        assert isinstance(key, RecipientPublicKey)
        body = crypto.x25519_wrap(key, dek, _AAD + salt, random_bytes)
        return cls(body[:X25519_SIZE], body[X25519_SIZE:])

    def unwrap(self, key: OpenKey, salt: bytes) -> bytes | None:
        """FormatError for a low-order share (docs/FORMAT.md §5)."""
        assert isinstance(key, RecipientKey)
        if isinstance(key, PQRecipientKey):  # a subclass, but never a classical identity
            return None
        return crypto.x25519_unwrap(key, self.share, self.wrapped, _AAD + salt)

    @classmethod
    def sealed_for(cls, slots: list[KnownSlot]) -> str:
        return f"{len(slots)} recipient slot(s)"
