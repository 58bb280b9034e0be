"""Cryptographic primitives and key types: the only module that imports ``cryptography``.

Constructions (docs/FORMAT.md §4-§8): HKDF-SHA256 (RFC 5869) for per-file subkeys and
the key commitment, AES-256-GCM (NIST SP 800-38D) for key wrapping and for payload
chunks with STREAM nonces (Hoang, Reyhanitabar, Rogaway, Vizár 2015; as in age and
Tink's AES-GCM-HKDF streaming AEAD), HMAC-SHA256 for the header MAC, Ed25519 (RFC 8032)
for signatures, BLAKE3-256 for chunk digests and the signed root (SHA-256 for key ids).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NoReturn, TypeVar

import blake3
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import ArgumentTypeError, FormatError, InvalidArgumentError, SignatureError

RandomBytes = Callable[[int], bytes]

KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SIZE = 12
SALT_SIZE = 32
DIGEST_SIZE = 32
ED25519_SIG_SIZE = 64
ED25519_PUB_SIZE = 32
KEY_ID_SIZE = 8
X25519_SIZE = 32  # public keys and shares

_KEY_ID_SYMMETRIC = b"sealedckpt/v1 key-id symmetric\x00"
_KEY_ID_ED25519 = b"sealedckpt/v1 key-id ed25519\x00"
_INFO_FILE_KEYS = b"sealedckpt/v1 file keys"
_INFO_WRAP = b"sealedckpt/v1 symmetric wrap key"
_SCRYPT_SLOT_LABEL = b"sealedckpt/v1 scrypt salt\x00"  # prefixes a passphrase slot's scrypt salt, as age
_INFO_X25519 = b"sealedckpt/v1 x25519 wrap key"
_KEY_ID_X25519 = b"sealedckpt/v1 key-id x25519\x00"
_ZERO_NONCE = bytes(NONCE_SIZE)

SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DEFAULT_LOG2N = 18  # ~0.5 s and 256 MiB on a current core
SCRYPT_MAX_LOG2N = 20  # what a reader accepts by default: 1 GiB, a few seconds
SCRYPT_LIMIT_LOG2N = 30  # the largest work factor the format allows
SCRYPT_SALT_SIZE = 16


def _forbid_pickle(obj: object) -> NoReturn:
    raise ArgumentTypeError(f"{type(obj).__name__} holds a secret and cannot be pickled or copied")


def _coerce_key_bytes(data: bytes | bytearray | memoryview, what: str) -> bytes:
    raw = bytes(data)
    if len(raw) != KEY_SIZE:
        raise InvalidArgumentError(f"{what} must be exactly {KEY_SIZE} bytes, got {len(raw)}")
    return raw


_K = TypeVar("_K", bound="_Key")


class _Key:
    """What every key type shares: its 32 raw bytes and a public 8-byte id."""

    __slots__ = ()
    _raw: bytes

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[_K], data: bytes | bytearray | memoryview) -> _K:
        return cls(data)

    def to_bytes(self) -> bytes:
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    @property
    def key_id(self) -> str:
        return self._id().hex()

    def _id(self) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Key)
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._id()))


class _SecretKey(_Key):
    """A key that must stay secret: generated from the OS RNG, never pickled or copied."""

    __slots__ = ()

    @classmethod
    def generate(cls: type[_K]) -> _K:
        return cls(os.urandom(KEY_SIZE))

    __reduce__ = _forbid_pickle
    __copy__ = _forbid_pickle


class SymmetricKey(_SecretKey):
    """A 256-bit secret key. Its ``key_id`` is a public 16-hex-digit fingerprint."""

    __slots__ = ("_key_id", "_raw")

    def __init__(self, key: bytes | bytearray | memoryview) -> None:
        self._raw = _coerce_key_bytes(key, "a SymmetricKey")
        self._key_id = hashlib.sha256(_KEY_ID_SYMMETRIC + self._raw).digest()[:KEY_ID_SIZE]

    def _id(self) -> bytes:
        return self._key_id

    @property
    def key_id_bytes(self) -> bytes:
        return self._key_id


_P25519 = (1 << 255) - 19
#: y-coordinates of the 8 small-order points of edwards25519 (the torsion subgroup): y = 1 (the
#: identity), p-1 (order 2), 0 (order 4), and the two order-8 values; each with either x sign.
#: Their non-canonical encodings (y + p < 2**255: p and p+1) fail the y < p check. Same set as
#: libsodium's ``crypto_sign_verify`` blocklist (Chalkias et al., *Taming the many EdDSAs*, 2020).
_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _P25519 - 1,
        int.from_bytes(bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"),
        int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"),
    }
)


def ed25519_key_id(raw: bytes) -> str:
    """The key id of 32 public-key bytes, valid key or not (``inspect`` shows unverified entries)."""
    return hashlib.sha256(_KEY_ID_ED25519 + raw).digest()[:KEY_ID_SIZE].hex()


def _check_ed25519_point(raw: bytes) -> None:
    """SignatureError for a non-canonical (y >= p) or small-order public key encoding."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P25519:
        raise SignatureError("not a canonical Ed25519 public key (y >= 2**255 - 19): refused")
    if y in _SMALL_ORDER_Y:
        raise SignatureError("Ed25519 public key is a small-order point (it would accept forged signatures): refused")


class VerifyKey(_Key):
    """An Ed25519 public key that checks signatures. Non-canonical and small-order encodings are
    refused with :class:`SignatureError` (docs/FORMAT.md §8)."""

    __slots__ = ("_key_id", "_pub", "_raw")
    #: The signature algorithm id of signature entries (docs/FORMAT.md §8).
    alg: ClassVar[str] = "ed25519"

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        if len(raw) != ED25519_PUB_SIZE:
            raise InvalidArgumentError(f"a VerifyKey must be exactly {ED25519_PUB_SIZE} bytes, got {len(raw)}")
        _check_ed25519_point(raw)
        try:
            self._pub = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:  # pragma: no cover - every 32-byte string loads today
            raise InvalidArgumentError("not an Ed25519 public key") from exc
        self._raw = raw
        self._key_id = hashlib.sha256(_KEY_ID_ED25519 + raw).digest()[:KEY_ID_SIZE]

    def _id(self) -> bytes:
        return self._key_id

    def verify(self, signature: bytes, message: bytes) -> None:
        """Check that ``signature`` is this key's Ed25519 signature over ``message``.

        Raises :class:`SignatureError` when it is not.
        """
        try:
            self._pub.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(f"signature by key {self.key_id} does not verify") from None


class SigningKey(_SecretKey):
    """An Ed25519 private key (stored as its 32-byte seed)."""

    __slots__ = ("_priv", "_public", "_raw")
    alg: ClassVar[str] = "ed25519"

    def __init__(self, seed: bytes | bytearray | memoryview) -> None:
        self._raw = _coerce_key_bytes(seed, "a SigningKey seed")
        self._priv = Ed25519PrivateKey.from_private_bytes(self._raw)
        self._public = VerifyKey(self._priv.public_key().public_bytes_raw())

    @property
    def public(self) -> VerifyKey:
        return self._public

    def _id(self) -> bytes:
        return self._public._key_id

    def sign(self, message: bytes) -> bytes:
        return self._priv.sign(message)


class RecipientPublicKey(_Key):
    """An X25519 public key: seal a file for the holder of the matching :class:`RecipientKey`."""

    __slots__ = ("_key_id", "_raw")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        if len(raw) != X25519_SIZE:
            raise InvalidArgumentError(f"a RecipientPublicKey must be exactly {X25519_SIZE} bytes, got {len(raw)}")
        self._raw = raw
        self._key_id = hashlib.sha256(_KEY_ID_X25519 + raw).digest()[:KEY_ID_SIZE]

    def _id(self) -> bytes:
        return self._key_id


class RecipientKey(_SecretKey):
    """An X25519 private key (an age-style identity) that opens files sealed to its public key."""

    __slots__ = ("_priv", "_public", "_raw")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._raw = _coerce_key_bytes(data, "a RecipientKey")
        self._priv = X25519PrivateKey.from_private_bytes(self._raw)
        self._public = RecipientPublicKey(self._priv.public_key().public_bytes_raw())

    @property
    def public(self) -> RecipientPublicKey:
        return self._public

    def _id(self) -> bytes:
        return self._public._key_id

    def exchange(self, share: bytes) -> bytes | None:
        """X25519 with a peer share; None for a low-order share (all-zero result)."""
        try:
            return self._priv.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            return None


class Passphrase:
    """A passphrase slot (scrypt, r=8, p=1, as age). ``log2n`` is the work factor used when
    sealing; ``max_log2n`` caps what a file may demand when opening (default 2**20)."""

    __slots__ = ("_secret", "log2n", "max_log2n")

    def __init__(
        self, secret: str | bytes, *, log2n: int = SCRYPT_DEFAULT_LOG2N, max_log2n: int = SCRYPT_MAX_LOG2N
    ) -> None:
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not raw:
            raise InvalidArgumentError("empty passphrase")
        if not 1 <= log2n <= SCRYPT_LIMIT_LOG2N or not 1 <= max_log2n <= SCRYPT_LIMIT_LOG2N:
            raise InvalidArgumentError("scrypt work factor out of range")
        self._secret = raw
        self.log2n = log2n
        self.max_log2n = max_log2n

    def derive(self, salt: bytes, log2n: int) -> bytes:
        return Scrypt(salt=salt, length=KEY_SIZE, n=1 << log2n, r=SCRYPT_R, p=SCRYPT_P).derive(self._secret)

    def __repr__(self) -> str:
        return f"Passphrase(<secret>, log2n={self.log2n})"

    __reduce__ = _forbid_pickle
    __copy__ = _forbid_pickle


def x25519_wrap(recipient: RecipientPublicKey, dek: bytes, aad: bytes, random_bytes: RandomBytes = os.urandom) -> bytes:
    """age-style X25519 stanza: ephemeral share || AES-256-GCM(HKDF(shared), DEK)."""
    eph = X25519PrivateKey.from_private_bytes(random_bytes(X25519_SIZE))
    share = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient.to_bytes()))
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=share + recipient.to_bytes(), info=_INFO_X25519).derive(shared)
    return share + AESGCM(wk).encrypt(_ZERO_NONCE, dek, aad)


def x25519_unwrap(identity: RecipientKey, share: bytes, wrapped: bytes, aad: bytes) -> bytes | None:
    shared = identity.exchange(share)
    if shared is None:
        raise FormatError("X25519 key slot with a low-order share")
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=share + identity.public.to_bytes(), info=_INFO_X25519).derive(
        shared
    )
    try:
        return AESGCM(wk).decrypt(_ZERO_NONCE, wrapped, aad)
    except InvalidTag:
        return None


def scrypt_wrap(p: Passphrase, dek: bytes, salt: bytes, aad: bytes) -> bytes:
    """Passphrase slot: AES-256-GCM(scrypt(p, label || salt), zero nonce, DEK, aad), as age."""
    return AESGCM(p.derive(_SCRYPT_SLOT_LABEL + salt, p.log2n)).encrypt(_ZERO_NONCE, dek, aad)


def scrypt_unwrap(p: Passphrase, log2n: int, salt: bytes, wrapped: bytes, aad: bytes) -> bytes | None:
    try:
        return AESGCM(p.derive(_SCRYPT_SLOT_LABEL + salt, log2n)).decrypt(_ZERO_NONCE, wrapped, aad)
    except InvalidTag:
        return None


def seal_secret(p: Passphrase, plaintext: bytes, aad: bytes) -> bytes:
    """log2n || salt[16] || AES-256-GCM(scrypt(p), zero nonce, plaintext): for protected key files."""
    salt = os.urandom(SCRYPT_SALT_SIZE)
    return bytes([p.log2n]) + salt + AESGCM(p.derive(salt, p.log2n)).encrypt(_ZERO_NONCE, plaintext, aad)


def open_secret(p: Passphrase, blob: bytes, aad: bytes) -> bytes | None:
    salt_end = 1 + SCRYPT_SALT_SIZE
    if len(blob) < salt_end + TAG_SIZE or not 1 <= blob[0] <= p.max_log2n:
        return None
    try:
        return AESGCM(p.derive(blob[1:salt_end], blob[0])).decrypt(_ZERO_NONCE, blob[salt_end:], aad)
    except InvalidTag:
        return None


@dataclass(frozen=True, repr=False)
class FileKeys:
    """Subkeys of one file, derived from its data key (DEK) and salt."""

    payload_key: bytes
    commitment: bytes
    header_mac_key: bytes

    def __repr__(self) -> str:
        return "FileKeys(<secret>)"


def derive_file_keys(dek: bytes, salt: bytes) -> FileKeys:
    """HKDF-SHA256(ikm=DEK, salt, info) -> payload key || key commitment || header MAC key."""
    out = HKDF(algorithm=hashes.SHA256(), length=96, salt=salt, info=_INFO_FILE_KEYS).derive(dek)
    return FileKeys(out[:32], out[32:64], out[64:96])


def header_mac(mac_key: bytes, data: bytes) -> bytes:
    return hmac.new(mac_key, data, hashlib.sha256).digest()


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a, b)


def content_hash(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 (unkeyed hash mode): chunk digests and the signed root (docs/FORMAT.md §8)."""
    return blake3.blake3(data).digest()


def _wrap_key(key: SymmetricKey, file_salt: bytes) -> AESGCM:
    """A wrap key per (key, file): HKDF-SHA256(IKM = key, salt = file salt), so a random 96-bit
    nonce only has to be unique within one file (docs/FORMAT.md §5)."""
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=file_salt, info=_INFO_WRAP).derive(key.to_bytes())
    return AESGCM(wk)


def wrap_dek(key: SymmetricKey, dek: bytes, nonce: bytes, aad: bytes, file_salt: bytes) -> bytes:
    """AES-256-GCM(per-file wrap key, nonce, DEK, aad) -> 48 bytes of ciphertext and tag."""
    return _wrap_key(key, file_salt).encrypt(nonce, dek, aad)


def unwrap_dek(key: SymmetricKey, nonce: bytes, wrapped: bytes, aad: bytes, file_salt: bytes) -> bytes | None:
    """The DEK, or None when this key does not open the slot."""
    try:
        return _wrap_key(key, file_salt).decrypt(nonce, wrapped, aad)
    except InvalidTag:
        return None


def stream_nonce(index: int, final: bool) -> bytes:
    """STREAM nonce: 11-byte big-endian chunk counter || 1-byte final flag."""
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class ChunkCipher:
    """AES-256-GCM over payload chunks, encrypting and decrypting into caller buffers."""

    __slots__ = ("_aead",)

    def __init__(self, payload_key: bytes) -> None:
        self._aead = AESGCM(payload_key)

    def encrypt_into(self, index: int, final: bool, plaintext: memoryview | bytes, out: memoryview) -> None:
        self._aead.encrypt_into(stream_nonce(index, final), plaintext, None, out)

    def decrypt_into(self, index: int, final: bool, ciphertext: memoryview | bytes, out: memoryview) -> bool:
        """Decrypt into ``out``; False (and ``out`` zeroed) if the tag does not verify."""
        try:
            self._aead.decrypt_into(stream_nonce(index, final), ciphertext, None, out)
        except InvalidTag:
            out[:] = bytes(len(out))
            return False
        return True

    def __repr__(self) -> str:
        return "ChunkCipher(<secret>)"

    __reduce__ = _forbid_pickle
