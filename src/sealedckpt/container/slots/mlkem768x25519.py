"""ML-KEM-768 + X25519 hybrid recipient slots (type 4), as age's ``mlkem768x25519`` stanza.

The KEM is X-Wing (crypto/pq.py); the DEK is wrapped like the X25519 slot's (docs/FORMAT.md §5).
No recipient identifier is stored. A file with such a slot is refused a classical slot next to it
unless the writer asks for the mix (a classical slot would undo the post-quantum protection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ... import crypto
from ...crypto import KEY_SIZE, TAG_SIZE, PQRecipientKey, PQRecipientPublicKey
from ...crypto.pq import XWING_CT_SIZE
from ...errors import FormatError
from .base import KnownSlot, OpenKey, SealKey

_AAD = b"sealedckpt/v1 mlkem768x25519 slot\x00"
BODY_SIZE = XWING_CT_SIZE + KEY_SIZE + TAG_SIZE  # X-Wing ciphertext (ct_M || ct_X), wrapped DEK + tag


@dataclass(frozen=True)
class MLKEM768X25519Slot(KnownSlot):
    TYPE = 4
    kind = "pq-recipient"
    seal_key = PQRecipientPublicKey
    open_key = PQRecipientKey

    ciphertext: bytes
    wrapped: bytes

    @property
    def body(self) -> bytes:
        return self.ciphertext + self.wrapped

    @classmethod
    def parse(cls, body: bytes) -> MLKEM768X25519Slot:
        if len(body) != BODY_SIZE:
            raise FormatError(f"ML-KEM-768 + X25519 key slot body is {len(body)} bytes, expected {BODY_SIZE}")
        return cls(body[:XWING_CT_SIZE], body[XWING_CT_SIZE:])

    @classmethod
    def wrap(cls, key: SealKey, dek: bytes, salt: bytes, random_bytes: Callable[[int], bytes]) -> MLKEM768X25519Slot:
        assert isinstance(key, PQRecipientPublicKey)
        body = crypto.xwing_wrap(key, dek, _AAD + salt, random_bytes)
        return cls(body[:XWING_CT_SIZE], body[XWING_CT_SIZE:])

    def unwrap(self, key: OpenKey, salt: bytes) -> bytes | None:
        """FormatError for a low-order X25519 share (docs/FORMAT.md §5)."""
        assert isinstance(key, PQRecipientKey)
        return crypto.xwing_unwrap(key, self.ciphertext, self.wrapped, _AAD + salt)

    def describe(self) -> dict[str, str]:
        return {"type": self.kind, "kem": "mlkem768x25519"}

    @classmethod
    def sealed_for(cls, slots: list[KnownSlot]) -> str:
        return f"{len(slots)} post-quantum (ML-KEM-768 + X25519) recipient slot(s)"
