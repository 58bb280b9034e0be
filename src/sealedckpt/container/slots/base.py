"""What every key slot kind provides: its body layout, its public view, wrap and unwrap."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ...crypto import Passphrase, RecipientKey, RecipientPublicKey, SymmetricKey

#: A key that opens a slot, and one that a file can be sealed for.
OpenKey = SymmetricKey | RecipientKey | Passphrase
SealKey = SymmetricKey | RecipientPublicKey | Passphrase

SlotKindName = Literal["symmetric", "recipient", "pq-recipient", "passphrase", "unknown"]


class KeySlot(ABC):
    """One parsed key slot, of a kind this version knows or not."""

    #: What kind of key opens it.
    kind: ClassVar[SlotKindName]
    #: True when a slot of this kind must be the only slot of its file.
    alone: ClassVar[bool] = False

    @property
    @abstractmethod
    def type(self) -> int:
        """The slot type byte (docs/FORMAT.md §5)."""

    @property
    @abstractmethod
    def body(self) -> bytes:
        """The slot body as stored."""

    @property
    def key_id(self) -> str | None:
        """The hex key-id hint the slot carries (unauthenticated), or None."""
        return None

    def names(self, key: OpenKey | SealKey) -> bool:
        """True when the slot's key-id hint names ``key``."""
        return False

    def label(self, index: int) -> str:
        """The public label of the slot at ``index`` (what ``rewrap --remove-slot`` takes)."""
        return f"#{index}:{self.kind}"

    def describe(self) -> dict[str, str]:
        """What ``inspect`` shows about the slot."""
        return {"type": self.kind}


class KnownSlot(KeySlot):
    """A slot kind this version reads and writes. The registry maps :attr:`TYPE` to it."""

    TYPE: ClassVar[int]
    #: The key this kind seals for, and the key that opens it.
    seal_key: ClassVar[type[SealKey]]
    open_key: ClassVar[type[OpenKey]]

    @property
    def type(self) -> int:
        return self.TYPE

    @classmethod
    @abstractmethod
    def parse(cls, body: bytes) -> KnownSlot:
        """Strictly parse a body of this kind (FormatError if malformed)."""

    @classmethod
    @abstractmethod
    def wrap(cls, key: SealKey, dek: bytes, salt: bytes, random_bytes: Callable[[int], bytes]) -> KnownSlot:
        """A slot of this kind wrapping ``dek`` for ``key`` (an instance of :attr:`seal_key`)."""

    @abstractmethod
    def unwrap(self, key: OpenKey, salt: bytes) -> bytes | None:
        """The DEK if ``key`` (an instance of :attr:`open_key`) opens this slot, else None."""

    @staticmethod
    def seal_label(key: SealKey) -> str:
        """How a seal summary names ``key``."""
        assert not isinstance(key, Passphrase)
        return key.key_id

    @classmethod
    def sealed_for(cls, slots: list[KnownSlot]) -> str:
        """How the "none of the keys opens this file" message names the slots of this kind."""
        return f"{len(slots)} {cls.kind} slot(s)"

    @classmethod
    def refusal(cls, slots: list[KnownSlot], keys: Sequence[OpenKey]) -> str | None:
        """A more precise message than "none of the keys" when no slot of this kind opened."""
        return None


@dataclass(frozen=True)
class UnknownSlot(KeySlot):
    """A slot type this version does not know: kept as is, never opened (docs/FORMAT.md §5)."""

    kind = "unknown"

    slot_type: int
    raw: bytes

    @property
    def type(self) -> int:
        return self.slot_type

    @property
    def body(self) -> bytes:
        return self.raw

    def label(self, index: int) -> str:
        return f"#{index}:type{self.slot_type}"

    def describe(self) -> dict[str, str]:
        return {"type": f"unknown-{self.slot_type}"}
