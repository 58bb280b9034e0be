"""Symmetric key slots (type 1): a 256-bit key wraps the DEK; the slot names its key id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ... import crypto
from ...crypto import KEY_ID_SIZE, NONCE_SIZE, TAG_SIZE, SymmetricKey
from ...errors import FormatError
from .base import KnownSlot, OpenKey, SealKey

_AAD = b"sealedckpt/v1 symmetric slot\x00"
BODY_SIZE = KEY_ID_SIZE + NONCE_SIZE + crypto.KEY_SIZE + TAG_SIZE  # key_id, nonce, wrapped DEK + tag


@dataclass(frozen=True)
class SymmetricSlot(KnownSlot):
    TYPE = 1
    kind = "symmetric"
    seal_key = SymmetricKey
    open_key = SymmetricKey

    key_id_bytes: bytes
    nonce: bytes
    wrapped: bytes

    @property
    def key_id(self) -> str:
        return self.key_id_bytes.hex()

    @property
    def body(self) -> bytes:
        return self.key_id_bytes + self.nonce + self.wrapped

    @classmethod
    def parse(cls, body: bytes) -> SymmetricSlot:
        if len(body) != BODY_SIZE:
            raise FormatError(f"symmetric key slot body is {len(body)} bytes, expected {BODY_SIZE}")
        return cls(body[:KEY_ID_SIZE], body[KEY_ID_SIZE : KEY_ID_SIZE + NONCE_SIZE], body[KEY_ID_SIZE + NONCE_SIZE :])

    @classmethod
    def wrap(cls, key: SealKey, dek: bytes, salt: bytes, random_bytes: Callable[[int], bytes]) -> SymmetricSlot:
        assert isinstance(key, SymmetricKey)
        nonce = random_bytes(NONCE_SIZE)
        return cls(key.key_id_bytes, nonce, crypto.wrap_dek(key, dek, nonce, _AAD + salt, salt))

    def unwrap(self, key: OpenKey, salt: bytes) -> bytes | None:
        assert isinstance(key, SymmetricKey)
        return crypto.unwrap_dek(key, self.nonce, self.wrapped, _AAD + salt, salt)

    def names(self, key: OpenKey | SealKey) -> bool:
        return isinstance(key, SymmetricKey) and key.key_id_bytes == self.key_id_bytes

    def label(self, index: int) -> str:
        return self.key_id

    def describe(self) -> dict[str, str]:
        return {"type": self.kind, "key_id": self.key_id}

    @classmethod
    def sealed_for(cls, slots: list[KnownSlot]) -> str:
        return "symmetric key ids " + ", ".join(str(s.key_id) for s in slots)
