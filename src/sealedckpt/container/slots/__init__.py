"""Key slots: one module per kind, and the registry that parses, wraps and opens them.

A kind is a :class:`KnownSlot` subclass in its own module plus one line in ``KINDS``. The
order of ``KINDS`` is the order in which kinds are tried when opening a file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

from ...errors import ArgumentTypeError, DecryptionError, FormatError, IntegrityError, InvalidArgumentError
from .base import KeySlot, KnownSlot, OpenKey, SealKey, SlotKindName, UnknownSlot
from .mlkem768x25519 import MLKEM768X25519Slot
from .scrypt import ScryptSlot
from .symmetric import SymmetricSlot
from .x25519 import X25519Slot

__all__ = [
    "KINDS",
    "KeySlot",
    "KnownSlot",
    "MLKEM768X25519Slot",
    "OpenKey",
    "ScryptSlot",
    "SealKey",
    "SlotKindName",
    "SymmetricSlot",
    "UnknownSlot",
    "X25519Slot",
    "allow_classical_recipients",
    "check_pq_mix",
    "make_slots",
    "open_slots",
    "parse_slot",
    "seal_label",
]

#: The PQ kind comes before X25519: its keys are RecipientKey subclasses, matched in this order.
KINDS: tuple[type[KnownSlot], ...] = (SymmetricSlot, MLKEM768X25519Slot, X25519Slot, ScryptSlot)

_ALLOW_MIXED_PQ: ContextVar[bool] = ContextVar("sealedckpt_allow_mixed_pq", default=False)


@contextlib.contextmanager
def allow_classical_recipients(allow: bool = True) -> Iterator[None]:
    """Within the block, a file may be sealed (or rewrapped) for post-quantum and classical
    X25519 recipients at once; outside it that mix is refused (docs/FORMAT.md §5.1)."""
    token = _ALLOW_MIXED_PQ.set(allow)
    try:
        yield
    finally:
        _ALLOW_MIXED_PQ.reset(token)


def check_pq_mix(slots: Sequence[KeySlot]) -> None:
    """Refuse, like age, a post-quantum recipient slot next to a classical X25519 one: whoever
    records the file today and breaks X25519 later opens it through the classical slot."""
    if _ALLOW_MIXED_PQ.get():
        return
    if any(isinstance(s, MLKEM768X25519Slot) for s in slots) and any(isinstance(s, X25519Slot) for s in slots):
        raise InvalidArgumentError(
            "refusing to mix post-quantum (ML-KEM-768 + X25519) and classical X25519 recipients in one file: "
            "the classical slot would open it to a future quantum attacker and undo the post-quantum protection",
            hint="seal for post-quantum recipients only, or ask for the mix "
            "(--allow-classical; `with sealedckpt.allow_classical_recipients():` in Python)",
        )


def parse_slot(slot_type: int, body: bytes) -> KeySlot:
    """A slot from its type byte and body; bodies of known kinds are checked exactly."""
    if slot_type == 0:
        raise FormatError("slot type 0 is reserved")
    for kind in KINDS:
        if kind.TYPE == slot_type:
            return kind.parse(body)
    return UnknownSlot(slot_type, body)


def _kind_for(key: object) -> type[KnownSlot]:
    for kind in KINDS:
        if isinstance(key, kind.seal_key):
            return kind
    raise ArgumentTypeError(f"cannot seal for a {type(key).__name__}")


def seal_label(key: SealKey) -> str:
    """How a seal summary names ``key``: its key id, or ``passphrase``."""
    return _kind_for(key).seal_label(key)


def make_slots(
    dek: bytes, salt: bytes, recipients: Sequence[SealKey], random_bytes: Callable[[int], bytes] = os.urandom
) -> list[KnownSlot]:
    """One key slot per recipient, wrapping ``dek``."""
    if not recipients:
        raise InvalidArgumentError("at least one key is needed to seal")
    kinds = [_kind_for(r) for r in recipients]
    ids = [k.seal_label(r) for k, r in zip(kinds, recipients, strict=True) if not k.alone]
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("the same key was given twice")
    for k in kinds:
        if k.alone and len(recipients) != 1:
            raise InvalidArgumentError(f"a {k.kind} must be the only key of a file (like age)")
    return [k.wrap(r, dek, salt, random_bytes) for k, r in zip(kinds, recipients, strict=True)]


def open_slots(slots: Sequence[KeySlot], salt: bytes, keys: Sequence[OpenKey]) -> bytes:
    """Recover the DEK from the first slot that one of ``keys`` opens.

    Slots whose key-id hint names one of the keys are tried first; then every slot of every
    kind (in ``KINDS`` order) with every key of its kind, since a hint is unauthenticated until
    the header MAC is checked. A slot whose hint names a key that does not open it means the
    header was modified.
    """
    if not keys:
        raise DecryptionError("no key given to open the file")
    tampered = False
    for s in slots:
        if not isinstance(s, KnownSlot):
            continue
        named = next((k for k in keys if s.names(k)), None)
        if named is not None:
            dek = s.unwrap(named, salt)
            if dek is not None:
                return dek
            tampered = True
    by_kind = [(kind, [s for s in slots if isinstance(s, kind)]) for kind in KINDS]
    for kind, of_kind in by_kind:
        for s in of_kind:
            for k in keys:
                if isinstance(k, kind.open_key) and not s.names(k):
                    dek = s.unwrap(k, salt)
                    if dek is not None:
                        return dek
    if tampered:
        raise IntegrityError("the key slot for the given key does not open: the header was modified")
    for kind, of_kind in by_kind:
        refusal = kind.refusal(of_kind, keys)
        if refusal is not None:
            raise DecryptionError(refusal)
    kinds = [kind.sealed_for(of_kind) for kind, of_kind in by_kind if of_kind]
    if not kinds:
        kinds.append("no slot type this version knows")
    raise DecryptionError(f"none of the {len(keys)} key(s) given opens this file (it is sealed for {'; '.join(kinds)})")
