"""One-line text forms of keys, with a checksum: Bech32 (BIP 173), as age does.

Public keys:  ``sckpt1...`` (X25519 recipient), ``sckpt-vk1...`` (Ed25519 verify key).
Secret keys:  ``SCKPT-SECRET-KEY-1...`` (X25519 identity), ``SCKPT-SYMMETRIC-KEY-1...``,
``SCKPT-SIGNING-KEY-1...`` (upper case, like age's ``AGE-SECRET-KEY-1``), so a secret is never
mistaken for something to paste in public.
Post-quantum (crypto/pq.py): ``sckpt1pq1...`` (ML-KEM-768 + X25519 recipient, 1216 bytes, like
age's ``age1pq1...``), ``sckpt-pqvk1...`` (Ed25519 + ML-DSA-65 verify key, 1984 bytes),
``SCKPT-PQ-SECRET-KEY-1...`` and ``SCKPT-PQ-SIGNING-KEY-1...`` (32-byte seeds). Like age's PQ
recipients, the long public forms lift BIP 173's 90-character limit (the checksum still catches
any single changed character).
A key with one character changed fails the checksum.
"""

from __future__ import annotations

from ..errors import InvalidArgumentError
from .pq import (
    COMPOSITE_PUB_SIZE,
    XWING_PUB_SIZE,
    CompositeSigningKey,
    CompositeVerifyKey,
    PQRecipientKey,
    PQRecipientPublicKey,
)
from .primitives import RecipientKey, RecipientPublicKey, SigningKey, SymmetricKey, VerifyKey

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)

HRP_RECIPIENT = "sckpt"
HRP_VERIFY = "sckpt-vk"
HRP_SYMMETRIC = "sckpt-symmetric-key-"
HRP_SIGNING = "sckpt-signing-key-"
HRP_IDENTITY = "sckpt-secret-key-"
HRP_PQ_RECIPIENT = "sckpt1pq"
HRP_PQ_VERIFY = "sckpt-pqvk"
HRP_PQ_IDENTITY = "sckpt-pq-secret-key-"
HRP_PQ_SIGNING = "sckpt-pq-signing-key-"
#: The longest text form decode() accepts: a composite verify key (1984 bytes) and its checksum.
MAX_TEXT_LEN = 3300

PublicKey = RecipientPublicKey | VerifyKey
SecretKey = SymmetricKey | SigningKey | RecipientKey


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: bytes | list[int], frm: int, to: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out = []
    maxv = (1 << to) - 1
    for v in data:
        acc = (acc << frm) | v
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to - bits)) & maxv)
    elif bits >= frm or ((acc << (to - bits)) & maxv):
        return None
    return out


def encode(hrp: str, data: bytes) -> str:
    words = _convert(data, 8, 5, True)
    assert words is not None
    values = _hrp_expand(hrp) + words
    poly = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in words + checksum)


def decode(text: str, hrp: str, max_len: int = 200) -> bytes:
    """Decode a Bech32 string with the given human-readable part; InvalidArgumentError if anything is off."""
    s = text.strip()
    if s.lower() != s and s.upper() != s:
        raise InvalidArgumentError("mixed case")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or s[:pos] != hrp:
        raise InvalidArgumentError(f"expected a key starting with {hrp}1")
    if len(s) > max_len or pos + 7 > len(s):
        raise InvalidArgumentError("wrong length")
    try:
        words = [_CHARSET.index(c) for c in s[pos + 1 :]]
    except ValueError:
        raise InvalidArgumentError("invalid character") from None
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise InvalidArgumentError("checksum mismatch: the key was mistyped or altered")
    data = _convert(words[:-6], 5, 8, False)
    if data is None:
        raise InvalidArgumentError("non-canonical padding")
    return bytes(data)


def public_to_text(k: PublicKey) -> str:
    if isinstance(k, CompositeVerifyKey):
        return encode(HRP_PQ_VERIFY, k.to_bytes())
    if isinstance(k, PQRecipientPublicKey):
        return encode(HRP_PQ_RECIPIENT, k.to_bytes())
    return encode(HRP_VERIFY if isinstance(k, VerifyKey) else HRP_RECIPIENT, k.to_bytes())


def _exact_len(b: bytes, n: int) -> bytes:
    if len(b) != n:
        raise InvalidArgumentError(f"key is {len(b)} bytes, expected {n}")
    return b


def public_from_text(text: str) -> PublicKey:
    """A recipient (``sckpt1...``, ``sckpt1pq1...``) or verify key (``sckpt-vk1...``,
    ``sckpt-pqvk1...``); InvalidArgumentError otherwise."""
    s = text.strip().lower()
    if s.startswith(HRP_PQ_RECIPIENT + "1"):
        return PQRecipientPublicKey(_exact_len(decode(s, HRP_PQ_RECIPIENT, MAX_TEXT_LEN), XWING_PUB_SIZE))
    if s.startswith(HRP_PQ_VERIFY + "1"):
        return verify_key_from_text(s)
    if s.startswith(HRP_VERIFY + "1"):
        return VerifyKey(_exact(decode(s, HRP_VERIFY)))
    if s.startswith(HRP_RECIPIENT + "1"):
        return RecipientPublicKey(_exact(decode(s, HRP_RECIPIENT)))
    raise InvalidArgumentError(f"not a sealedckpt public key (expected {HRP_RECIPIENT}1... or {HRP_VERIFY}1...)")


def verify_key_to_text(k: VerifyKey) -> str:
    return public_to_text(k)


def verify_key_from_text(text: str) -> VerifyKey:
    """An Ed25519 (``sckpt-vk1...``) or composite (``sckpt-pqvk1...``) verify key."""
    if text.strip().lower().startswith(HRP_PQ_VERIFY + "1"):
        return CompositeVerifyKey(_exact_len(decode(text, HRP_PQ_VERIFY, MAX_TEXT_LEN), COMPOSITE_PUB_SIZE))
    return VerifyKey(_exact(decode(text, HRP_VERIFY)))


_SECRET_HRPS: list[tuple[str, type[SymmetricKey] | type[SigningKey] | type[RecipientKey]]] = [
    (HRP_PQ_SIGNING, CompositeSigningKey),  # before the classical kinds: isinstance order
    (HRP_PQ_IDENTITY, PQRecipientKey),
    (HRP_SYMMETRIC, SymmetricKey),
    (HRP_SIGNING, SigningKey),
    (HRP_IDENTITY, RecipientKey),
]


def secret_to_text(k: SecretKey) -> str:
    hrp = next(h for h, cls in _SECRET_HRPS if isinstance(k, cls))
    return encode(hrp, k.to_bytes()).upper()


def secret_from_text(text: str) -> SecretKey:
    s = text.strip()
    for hrp, cls in _SECRET_HRPS:
        if s.lower().startswith(hrp + "1"):
            return cls(_exact(decode(s, hrp)))
    raise InvalidArgumentError("not a sealedckpt secret key")


def _exact(b: bytes) -> bytes:
    if len(b) != 32:
        raise InvalidArgumentError(f"key is {len(b)} bytes, expected 32")
    return b
