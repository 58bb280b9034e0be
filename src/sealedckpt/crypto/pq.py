"""Post-quantum hybrid keys: the X-Wing KEM recipient and Ed25519 + ML-DSA-65 composite signatures.

**Hybrid recipient** (docs/FORMAT.md §5.1). X-Wing, draft-connolly-cfrg-xwing-kem (ML-KEM-768,
FIPS 203, plus X25519, RFC 7748, joined by a SHA3-256 combiner), the KEM that age's
``mlkem768x25519`` recipient uses. The secret is X-Wing's 32-byte decapsulation seed, expanded
with SHAKE256 into the ML-KEM-768 key-generation seed (d || z) and the X25519 scalar; the public
key is ``pk_M (1184) || pk_X (32)``; a ciphertext is ``ct_M (1088) || ct_X (32)``;
``ss = SHA3-256(ss_M || ss_X || ct_X || pk_X || "\\.//^\\")``. Where age puts the shared secret
through HPKE, a sealedckpt slot wraps the file's DEK like its X25519 slot does:
AES-256-GCM under HKDF-SHA256(ikm = ss, salt = ct || pk, info = label). A file is safe while
either ML-KEM-768 or X25519 stays unbroken.

**Composite signature** (docs/FORMAT.md §8.1), after the idea of draft-ietf-lamps-pq-composite-sigs:
both component algorithms sign one pre-hashed, domain-separated message representative
``M' = Prefix || Label || 0x00 || SHA-512(M)`` (Prefix = the draft's
``CompositeAlgorithmSignatures2025``, Label = ``sealedckpt/v1 ed25519+mldsa65``, empty context);
ML-DSA-65 (FIPS 204, hedged) signs it with the label as its context string. A signature is
``ed25519 sig (64) || ML-DSA-65 sig (3309)`` and verifies only when both halves do; the public key
is ``ed25519 pk (32) || ML-DSA-65 pk (1952)``. The secret is one 32-byte seed, expanded with
SHAKE256 into the Ed25519 seed and the ML-DSA-65 seed (as X-Wing does for its two halves).
The draft's own labels, component order and key encodings are not used, so a sealedckpt composite
signature is not interchangeable with an X.509 composite one.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import FormatError, InvalidArgumentError, SignatureError
from .primitives import (
    ED25519_PUB_SIZE,
    ED25519_SIG_SIZE,
    KEY_ID_SIZE,
    X25519_SIZE,
    RandomBytes,
    RecipientKey,
    RecipientPublicKey,
    SigningKey,
    VerifyKey,
    _check_ed25519_point,
    _coerce_key_bytes,
)

MLKEM768_PUB_SIZE = 1184
MLKEM768_CT_SIZE = 1088
XWING_PUB_SIZE = MLKEM768_PUB_SIZE + X25519_SIZE  # 1216
XWING_CT_SIZE = MLKEM768_CT_SIZE + X25519_SIZE  # 1120
XWING_SEED_SIZE = 32
MLDSA65_PUB_SIZE = 1952
MLDSA65_SIG_SIZE = 3309
COMPOSITE_PUB_SIZE = ED25519_PUB_SIZE + MLDSA65_PUB_SIZE  # 1984
COMPOSITE_SIG_SIZE = ED25519_SIG_SIZE + MLDSA65_SIG_SIZE  # 3373
#: The algorithm id of a composite signature (what a signature entry's ``alg`` names).
COMPOSITE_ALG = "ed25519+mldsa65"

#: X-Wing's combiner label, the six ASCII bytes \.//^\ (draft-connolly-cfrg-xwing-kem §5.3).
XWING_LABEL = b"\\.//^\\"
_INFO_XWING_WRAP = b"sealedckpt/v1 mlkem768x25519 wrap key"
_KEY_ID_XWING = b"sealedckpt/v1 key-id mlkem768x25519\x00"
_COMPOSITE_PREFIX = b"CompositeAlgorithmSignatures2025"
_COMPOSITE_LABEL = b"sealedckpt/v1 ed25519+mldsa65"
_COMPOSITE_EXPAND = b"sealedckpt/v1 composite seed ed25519+mldsa65\x00"
_KEY_ID_COMPOSITE = b"sealedckpt/v1 key-id ed25519+mldsa65\x00"
_ZERO_NONCE = bytes(12)


# --- X-Wing (draft-connolly-cfrg-xwing-kem) ----------------------------------------------------


def xwing_expand(seed: bytes) -> tuple[MLKEM768PrivateKey, X25519PrivateKey, bytes]:
    """expandDecapsulationKey: SHAKE256(seed, 96) -> ML-KEM-768 seed d || z, X25519 scalar;
    also returns the public key pk_M || pk_X."""
    expanded = hashlib.shake_256(seed).digest(96)
    sk_m = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    sk_x = X25519PrivateKey.from_private_bytes(expanded[64:96])
    pk = sk_m.public_key().public_bytes_raw() + sk_x.public_key().public_bytes_raw()
    return sk_m, sk_x, pk


def xwing_combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def xwing_encapsulate(pk: bytes, random_bytes: RandomBytes = os.urandom) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the X-Wing public key ``pk``. The ML-KEM half draws its
    randomness inside the library (it takes no seed), so only the X25519 half is reproducible."""
    try:
        pk_m = MLKEM768PublicKey.from_public_bytes(pk[:MLKEM768_PUB_SIZE])
        eph = X25519PrivateKey.from_private_bytes(random_bytes(X25519_SIZE))
        pk_x = pk[MLKEM768_PUB_SIZE:]
        ss_x = eph.exchange(X25519PublicKey.from_public_bytes(pk_x))
    except ValueError:
        raise InvalidArgumentError("not a valid ML-KEM-768 + X25519 public key") from None
    ss_m, ct_m = pk_m.encapsulate()
    ct_x = eph.public_key().public_bytes_raw()
    return xwing_combiner(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


def xwing_decapsulate(sk_m: MLKEM768PrivateKey, sk_x: X25519PrivateKey, pk_x: bytes, ct: bytes) -> bytes:
    """The shared secret of ``ct``. ML-KEM rejects implicitly (a wrong ciphertext gives a random
    secret); FormatError for a low-order X25519 share, which the library refuses."""
    if len(ct) != XWING_CT_SIZE:
        raise FormatError(f"X-Wing ciphertext is {len(ct)} bytes, expected {XWING_CT_SIZE}")
    ct_x = ct[MLKEM768_CT_SIZE:]
    try:
        ss_x = sk_x.exchange(X25519PublicKey.from_public_bytes(ct_x))
    except ValueError:
        raise FormatError("ML-KEM-768 + X25519 key slot with a low-order X25519 share") from None
    ss_m = sk_m.decapsulate(ct[:MLKEM768_CT_SIZE])
    return xwing_combiner(ss_m, ss_x, ct_x, pk_x)


class PQRecipientPublicKey(RecipientPublicKey):
    """An ML-KEM-768 + X25519 (X-Wing) public key: seal a file for a :class:`PQRecipientKey`."""

    __slots__ = ()

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        if len(raw) != XWING_PUB_SIZE:
            raise InvalidArgumentError(f"a PQRecipientPublicKey must be {XWING_PUB_SIZE} bytes, got {len(raw)}")
        try:
            MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUB_SIZE])  # the FIPS 203 modulus check
        except ValueError:
            raise InvalidArgumentError("not an ML-KEM-768 public key (coefficients out of range)") from None
        self._raw = raw
        self._key_id = hashlib.sha256(_KEY_ID_XWING + raw).digest()[:KEY_ID_SIZE]


class PQRecipientKey(RecipientKey):
    """An X-Wing decapsulation key (its 32-byte seed): opens files sealed to its public key.
    It never opens a classical X25519 slot (its X25519 half is not a classical identity)."""

    __slots__ = ("_sk_m",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._raw = _coerce_key_bytes(data, "a PQRecipientKey seed")
        self._sk_m, self._priv, pk = xwing_expand(self._raw)
        self._public = PQRecipientPublicKey(pk)

    @property
    def public(self) -> PQRecipientPublicKey:
        assert isinstance(self._public, PQRecipientPublicKey)
        return self._public

    def exchange(self, share: bytes) -> bytes | None:
        return None  # not a classical identity: see the class docstring

    def decapsulate(self, ct: bytes) -> bytes:
        return xwing_decapsulate(self._sk_m, self._priv, self._public.to_bytes()[MLKEM768_PUB_SIZE:], ct)


def _xwing_wrap_key(ss: bytes, ct: bytes, pk: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=ct + pk, info=_INFO_XWING_WRAP).derive(ss))


def xwing_wrap(
    recipient: PQRecipientPublicKey, dek: bytes, aad: bytes, random_bytes: RandomBytes = os.urandom
) -> bytes:
    """X-Wing ciphertext (1120) || AES-256-GCM(HKDF(ss, salt = ct || pk), zero nonce, DEK, aad)."""
    ss, ct = xwing_encapsulate(recipient.to_bytes(), random_bytes)
    return ct + _xwing_wrap_key(ss, ct, recipient.to_bytes()).encrypt(_ZERO_NONCE, dek, aad)


def xwing_unwrap(identity: PQRecipientKey, ct: bytes, wrapped: bytes, aad: bytes) -> bytes | None:
    """The DEK, or None when ``identity`` does not open the slot (ML-KEM's implicit rejection
    makes a wrong key and a modified ciphertext look the same: the AEAD tag fails)."""
    ss = identity.decapsulate(ct)
    try:
        return _xwing_wrap_key(ss, ct, identity.public.to_bytes()).decrypt(_ZERO_NONCE, wrapped, aad)
    except InvalidTag:
        return None


# --- composite Ed25519 + ML-DSA-65 -------------------------------------------------------------


def composite_key_id(raw: bytes) -> str:
    """The key id of composite public-key bytes, valid key or not (``inspect`` shows unverified entries)."""
    return hashlib.sha256(_KEY_ID_COMPOSITE + raw).digest()[:KEY_ID_SIZE].hex()


def composite_representative(message: bytes) -> bytes:
    """M' = Prefix || Label || len(ctx) = 0 || SHA-512(M): what both halves sign."""
    return _COMPOSITE_PREFIX + _COMPOSITE_LABEL + b"\x00" + hashlib.sha512(message).digest()


class CompositeVerifyKey(VerifyKey):
    """An Ed25519 + ML-DSA-65 public key: a signature verifies only when both halves do.
    Its Ed25519 half alone is a different key (a classical signature by it is not this key's)."""

    __slots__ = ("_mldsa",)
    alg = COMPOSITE_ALG

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        if len(raw) != COMPOSITE_PUB_SIZE:
            raise InvalidArgumentError(f"a CompositeVerifyKey must be {COMPOSITE_PUB_SIZE} bytes, got {len(raw)}")
        _check_ed25519_point(raw[:ED25519_PUB_SIZE])
        self._pub = VerifyKey(raw[:ED25519_PUB_SIZE])._pub
        try:
            self._mldsa = MLDSA65PublicKey.from_public_bytes(raw[ED25519_PUB_SIZE:])
        except ValueError:  # pragma: no cover - every 1952-byte string decodes today
            raise InvalidArgumentError("not an ML-DSA-65 public key") from None
        self._raw = raw
        self._key_id = hashlib.sha256(_KEY_ID_COMPOSITE + raw).digest()[:KEY_ID_SIZE]

    def verify(self, signature: bytes, message: bytes) -> None:
        """SignatureError unless both the Ed25519 and the ML-DSA-65 half verify over M'."""
        if len(signature) != COMPOSITE_SIG_SIZE:
            raise SignatureError(f"composite signature by key {self.key_id} has the wrong length")
        rep = composite_representative(message)
        try:
            self._pub.verify(signature[:ED25519_SIG_SIZE], rep)
            self._mldsa.verify(signature[ED25519_SIG_SIZE:], rep, _COMPOSITE_LABEL)
        except InvalidSignature:
            raise SignatureError(f"signature by key {self.key_id} does not verify") from None


class CompositeSigningKey(SigningKey):
    """An Ed25519 + ML-DSA-65 signing key, stored as one 32-byte seed (expanded with SHAKE256)."""

    __slots__ = ("_mldsa",)
    alg = COMPOSITE_ALG

    def __init__(self, seed: bytes | bytearray | memoryview) -> None:
        self._raw = _coerce_key_bytes(seed, "a CompositeSigningKey seed")
        expanded = hashlib.shake_256(_COMPOSITE_EXPAND + self._raw).digest(64)
        self._priv = Ed25519PrivateKey.from_private_bytes(expanded[:32])
        self._mldsa = MLDSA65PrivateKey.from_seed_bytes(expanded[32:])
        self._public = CompositeVerifyKey(
            self._priv.public_key().public_bytes_raw() + self._mldsa.public_key().public_bytes_raw()
        )

    @property
    def public(self) -> CompositeVerifyKey:
        assert isinstance(self._public, CompositeVerifyKey)
        return self._public

    def sign(self, message: bytes) -> bytes:
        rep = composite_representative(message)
        return self._priv.sign(rep) + self._mldsa.sign(rep, _COMPOSITE_LABEL)
