"""Passphrase slots (type 3), as age's scrypt stanza: the only slot of its file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ... import crypto
from ...crypto import KEY_SIZE, SCRYPT_LIMIT_LOG2N, SCRYPT_SALT_SIZE, TAG_SIZE, Passphrase
from ...errors import FormatError
from .base import KnownSlot, OpenKey, SealKey

_AAD = b"sealedckpt/v1 scrypt slot\x00"
#: The one error (DecryptionError, this message) for a wrong passphrase and for a slot that opens
#: but whose DEK then fails the key commitment or the header MAC: telling them apart would be a
#: partition oracle (Len, Grubbs, Ristenpart, *Partitioning Oracle Attacks*, USENIX Security 2021).
WRONG_PASSPHRASE = "wrong passphrase"
BODY_SIZE = 1 + SCRYPT_SALT_SIZE + KEY_SIZE + TAG_SIZE  # log2n, salt, wrapped DEK + tag


@dataclass(frozen=True)
class ScryptSlot(KnownSlot):
    TYPE = 3
    kind = "passphrase"
    seal_key = Passphrase
    open_key = Passphrase
    alone = True

    log2n: int
    salt: bytes
    wrapped: bytes

    @property
    def body(self) -> bytes:
        return bytes([self.log2n]) + self.salt + self.wrapped

    @classmethod
    def parse(cls, body: bytes) -> ScryptSlot:
        if len(body) != BODY_SIZE:
            raise FormatError(f"passphrase key slot body is {len(body)} bytes, expected {BODY_SIZE}")
        if not 1 <= body[0] <= SCRYPT_LIMIT_LOG2N:
            raise FormatError(f"passphrase slot work factor 2**{body[0]} out of range")
        return cls(body[0], body[1 : 1 + SCRYPT_SALT_SIZE], body[1 + SCRYPT_SALT_SIZE :])

    @classmethod
    def wrap(cls, key: SealKey, dek: bytes, salt: bytes, random_bytes: Callable[[int], bytes]) -> ScryptSlot:
        assert isinstance(key, Passphrase)
        psalt = random_bytes(SCRYPT_SALT_SIZE)
        return cls(key.log2n, psalt, crypto.scrypt_wrap(key, dek, psalt, _AAD + salt))

    @staticmethod
    def seal_label(key: SealKey) -> str:
        return "passphrase"

    def unwrap(self, key: OpenKey, salt: bytes) -> bytes | None:
        """The work factor is checked against the passphrase's cap before scrypt runs."""
        assert isinstance(key, Passphrase)
        if self.log2n > key.max_log2n:
            raise FormatError(
                f"passphrase slot demands scrypt work factor 2**{self.log2n}, above the cap 2**{key.max_log2n}",
                hint="in Python, raise Passphrase(..., max_log2n=...) only for a file you expect to be that costly",
            )
        return crypto.scrypt_unwrap(key, self.log2n, self.salt, self.wrapped, _AAD + salt)

    def describe(self) -> dict[str, str]:
        return {"type": self.kind, "work_factor": f"2**{self.log2n}"}

    @classmethod
    def sealed_for(cls, slots: list[KnownSlot]) -> str:
        return "a passphrase"

    @classmethod
    def refusal(cls, slots: list[KnownSlot], keys: Sequence[OpenKey]) -> str | None:
        return WRONG_PASSPHRASE if slots and any(isinstance(k, Passphrase) for k in keys) else None
