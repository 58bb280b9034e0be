"""Key slot kinds: what each parsed slot exposes, and the registry that parses and opens them."""

from __future__ import annotations

import os

import pytest

from sealedckpt.container.slots import (
    KINDS,
    ScryptSlot,
    SymmetricSlot,
    UnknownSlot,
    X25519Slot,
    make_slots,
    open_slots,
    parse_slot,
)
from sealedckpt.crypto import Passphrase, PQRecipientKey, RecipientKey, SymmetricKey
from sealedckpt.errors import DecryptionError, FormatError, IntegrityError

_SALT = bytes(32)
_DEK = bytes(range(32))


def test_each_kind_exposes_kind_key_id_label_and_description() -> None:
    sym, ident = SymmetricKey.generate(), RecipientKey.generate()
    s, x = make_slots(_DEK, _SALT, [sym, ident.public])
    assert isinstance(s, SymmetricSlot) and isinstance(x, X25519Slot)
    assert (s.kind, s.key_id, s.label(0), s.describe()) == (
        "symmetric",
        sym.key_id,
        sym.key_id,
        {"type": "symmetric", "key_id": sym.key_id},
    )
    assert (x.kind, x.key_id, x.label(1), x.describe()) == ("recipient", None, "#1:recipient", {"type": "recipient"})
    (p,) = make_slots(_DEK, _SALT, [Passphrase("pw", log2n=2)])
    assert (p.kind, p.key_id, p.label(0), p.describe()) == (
        "passphrase",
        None,
        "#0:passphrase",
        {"type": "passphrase", "work_factor": "2**2"},
    )
    u = parse_slot(9, b"opaque")
    assert isinstance(u, UnknownSlot)
    assert (u.kind, u.key_id, u.label(2), u.describe(), u.body) == (
        "unknown",
        None,
        "#2:type9",
        {"type": "unknown-9"},
        b"opaque",
    )


def test_parse_round_trips_every_kind() -> None:
    slots = make_slots(_DEK, _SALT, [SymmetricKey.generate(), RecipientKey.generate().public])
    slots += make_slots(_DEK, _SALT, [Passphrase("pw", log2n=2)])
    slots += make_slots(_DEK, _SALT, [PQRecipientKey.generate().public])
    assert {type(s) for s in slots} == set(KINDS)
    for s in slots:
        assert parse_slot(s.type, s.body) == s


def test_open_slots_tries_hinted_slots_first_and_reports_tampering() -> None:
    a, b = SymmetricKey.generate(), SymmetricKey.generate()
    sa, sb = make_slots(_DEK, _SALT, [a, b], os.urandom)
    assert open_slots([sa, sb], _SALT, [b]) == _DEK
    assert isinstance(sa, SymmetricSlot)
    forged = SymmetricSlot(sa.key_id_bytes, sa.nonce, bytes(len(sa.wrapped)))
    with pytest.raises(IntegrityError, match="header was modified"):
        open_slots([forged], _SALT, [a])
    with pytest.raises(DecryptionError, match="sealed for symmetric key ids"):
        open_slots([sa], _SALT, [b])
    with pytest.raises(DecryptionError, match="no slot type this version knows"):
        open_slots([parse_slot(9, b"")], _SALT, [a])


def test_reserved_type_and_bad_bodies_are_format_errors() -> None:
    with pytest.raises(FormatError, match="reserved"):
        parse_slot(0, b"")
    for kind in KINDS:
        with pytest.raises(FormatError):
            parse_slot(kind.TYPE, b"short")
    body = ScryptSlot(31, bytes(16), bytes(48)).body
    with pytest.raises(FormatError, match="out of range"):
        parse_slot(ScryptSlot.TYPE, body)
