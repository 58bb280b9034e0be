"""Byte layout of a sealed checkpoint (docs/FORMAT.md): parsing and building, no crypto.

Every length read from a file is checked against a cap before it is used. Key slot bodies are
parsed and built by their kinds (:mod:`.slots`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..crypto import DIGEST_SIZE, ED25519_PUB_SIZE, ED25519_SIG_SIZE, TAG_SIZE
from ..crypto.pq import COMPOSITE_ALG, COMPOSITE_PUB_SIZE, COMPOSITE_SIG_SIZE
from ..errors import ArgumentTypeError, FormatError, IntegrityError, InvalidArgumentError
from .slots import KeySlot, check_pq_mix, parse_slot

MAGIC = b"\x89SCKPT\r\n"
VERSION = 1
PREAMBLE_SIZE = 16  # magic[8] version[1] reserved[3] content_len[4]

PAYLOAD_SAFETENSORS = 1

# Caps (docs/FORMAT.md §12).
MAX_CONTENT_LEN = 1 << 20
MAX_SLOTS_LEN = 1 << 18
MAX_SLOTS = 64
MAX_META_ENTRIES = 1024
MAX_META_KEY = 256
MAX_META_VALUE = 1 << 16
MIN_CHUNK_LOG2 = 16
MAX_CHUNK_LOG2 = 24
DEFAULT_CHUNK_LOG2 = 22
MAX_CHUNKS = 1 << 22
MAX_SIGNATURES = 16

MAC_SIZE = 32

SIG_ED25519 = 1
SIG_ENTRY_SIZE = 1 + ED25519_PUB_SIZE + 8 + ED25519_SIG_SIZE  # type, public key, signed_at, signature
SIG_COMPOSITE = 2  # Ed25519 + ML-DSA-65 (crypto/pq.py; docs/FORMAT.md §8.1)
#: Signature type -> (algorithm id, public key size, signature size).
SIG_TYPES: dict[int, tuple[str, int, int]] = {
    SIG_ED25519: ("ed25519", ED25519_PUB_SIZE, ED25519_SIG_SIZE),
    SIG_COMPOSITE: (COMPOSITE_ALG, COMPOSITE_PUB_SIZE, COMPOSITE_SIG_SIZE),
}
SIG_TYPE_OF_ALG = {alg: t for t, (alg, _, _) in SIG_TYPES.items()}


def sig_entry_size(sig_type: int) -> int:
    """The size of a signature entry of ``sig_type``; FormatError for a type this reader does not know."""
    if sig_type not in SIG_TYPES:
        raise FormatError(f"unknown signature type {sig_type}")
    _, pub, sig = SIG_TYPES[sig_type]
    return 1 + pub + 8 + sig


_CONTENT_FIXED = struct.Struct("<BBHQ32s32sH")  # payload_type chunk_log2 reserved payload_len salt commit n_meta


@dataclass(frozen=True)
class Content:
    """The signed part of the header."""

    payload_type: int
    chunk_log2: int
    payload_len: int
    salt: bytes
    commitment: bytes
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2

    @property
    def n_chunks(self) -> int:
        return chunk_count(self.payload_len, self.chunk_size)

    def plain_len(self, index: int) -> int:
        """Plaintext length of chunk ``index``."""
        if index < self.n_chunks - 1:
            return self.chunk_size
        return self.payload_len - (self.n_chunks - 1) * self.chunk_size

    @property
    def ciphertext_len(self) -> int:
        return self.payload_len + self.n_chunks * TAG_SIZE


@dataclass(frozen=True)
class SignatureEntry:
    type: int
    public_key: bytes
    signed_at: int
    signature: bytes

    def build(self) -> bytes:
        return bytes([self.type]) + self.public_key + struct.pack("<Q", self.signed_at) + self.signature


def chunk_count(payload_len: int, chunk_size: int) -> int:
    """Number of chunks: at least one (an empty payload is one empty final chunk)."""
    return max(1, -(-payload_len // chunk_size))


def max_payload_len(chunk_log2: int) -> int:
    return MAX_CHUNKS << chunk_log2


# --- building -----------------------------------------------------------------------------


def build_content(c: Content) -> bytes:
    if not MIN_CHUNK_LOG2 <= c.chunk_log2 <= MAX_CHUNK_LOG2:
        raise InvalidArgumentError("chunk_log2 out of range")
    if c.payload_len > max_payload_len(c.chunk_log2):
        raise InvalidArgumentError("payload too large for this chunk size")
    items = _canonical_metadata(c.metadata)
    parts = [_CONTENT_FIXED.pack(c.payload_type, c.chunk_log2, 0, c.payload_len, c.salt, c.commitment, len(items))]
    for k, v in items:
        parts.append(struct.pack("<H", len(k)) + k + struct.pack("<I", len(v)) + v)
    out = b"".join(parts)
    if len(out) > MAX_CONTENT_LEN:
        raise InvalidArgumentError(
            f"public metadata too large: header would be {len(out)} bytes (cap {MAX_CONTENT_LEN})"
        )
    return out


def _canonical_metadata(metadata: dict[str, str]) -> list[tuple[bytes, bytes]]:
    if len(metadata) > MAX_META_ENTRIES:
        raise InvalidArgumentError(f"at most {MAX_META_ENTRIES} public metadata entries")
    items = []
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ArgumentTypeError("public metadata must be dict[str, str]")
        kb, vb = k.encode("utf-8"), v.encode("utf-8")
        if not 1 <= len(kb) <= MAX_META_KEY:
            raise InvalidArgumentError(f"metadata key must be 1..{MAX_META_KEY} bytes of UTF-8: {k!r}")
        if len(vb) > MAX_META_VALUE:
            raise InvalidArgumentError(f"metadata value for {k!r} exceeds {MAX_META_VALUE} bytes")
        items.append((kb, vb))
    items.sort()
    return items


def build_preamble(content_len: int) -> bytes:
    return MAGIC + bytes([VERSION, 0, 0, 0]) + struct.pack("<I", content_len)


def build_slots(slots: Sequence[KeySlot]) -> bytes:
    if not 1 <= len(slots) <= MAX_SLOTS:
        raise InvalidArgumentError(f"a file needs 1..{MAX_SLOTS} key slots, got {len(slots)}")
    for s in slots:
        if s.alone and len(slots) != 1:
            raise InvalidArgumentError(f"a {s.kind} must be the only key of a file (like age)")
    check_pq_mix(slots)
    body = struct.pack("<H", len(slots)) + b"".join(
        bytes([s.type]) + struct.pack("<H", len(s.body)) + s.body for s in slots
    )
    if len(body) > MAX_SLOTS_LEN:
        raise InvalidArgumentError("key slots too large")
    return struct.pack("<I", len(body)) + body


def build_trailer(table: bytes, signatures: list[SignatureEntry]) -> bytes:
    if len(signatures) > MAX_SIGNATURES:
        raise InvalidArgumentError(f"at most {MAX_SIGNATURES} signatures")
    head = struct.pack("<H", len(signatures))
    if not signatures:
        return head
    return head + table + b"".join(s.build() for s in signatures)


# --- parsing ------------------------------------------------------------------------------


def parse_preamble(data: bytes) -> int:
    """Check magic and version; return the content length."""
    if len(data) < PREAMBLE_SIZE:
        raise IntegrityError("file truncated inside the preamble")
    if data[:8] != MAGIC:
        raise FormatError("not a sealed checkpoint (bad magic)")
    if data[8] != VERSION:
        raise FormatError(
            f"unsupported sealed checkpoint version {data[8]} (this sealedckpt reads version {VERSION})",
            hint="upgrade sealedckpt",
        )
    if data[9:12] != b"\x00\x00\x00":
        raise FormatError("reserved preamble bytes are not zero")
    (content_len,) = struct.unpack_from("<I", data, 12)
    if not _CONTENT_FIXED.size <= content_len <= MAX_CONTENT_LEN:
        raise FormatError(f"content header length {content_len} outside {_CONTENT_FIXED.size}..{MAX_CONTENT_LEN}")
    return int(content_len)


def parse_content(data: bytes) -> Content:
    if len(data) < _CONTENT_FIXED.size:
        raise FormatError("content header too short")
    ptype, log2, reserved, payload_len, salt, commit, n_meta = _CONTENT_FIXED.unpack_from(data, 0)
    if ptype != PAYLOAD_SAFETENSORS:
        raise FormatError(f"unknown payload type {ptype}")
    if not MIN_CHUNK_LOG2 <= log2 <= MAX_CHUNK_LOG2:
        raise FormatError(f"chunk size 2**{log2} outside 2**{MIN_CHUNK_LOG2}..2**{MAX_CHUNK_LOG2}")
    if reserved != 0:
        raise FormatError("reserved content bytes are not zero")
    if payload_len > max_payload_len(log2):
        raise FormatError(f"payload length {payload_len} exceeds the cap for this chunk size")
    if n_meta > MAX_META_ENTRIES:
        raise FormatError(f"{n_meta} metadata entries (cap {MAX_META_ENTRIES})")
    pos = _CONTENT_FIXED.size
    meta: dict[str, str] = {}
    prev: bytes | None = None
    for _ in range(n_meta):
        klen = _u16(data, pos, "metadata key length")
        pos += 2
        if not 1 <= klen <= MAX_META_KEY:
            raise FormatError(f"metadata key length {klen} outside 1..{MAX_META_KEY}")
        kb = _take(data, pos, klen, "metadata key")
        pos += klen
        vlen = _u32(data, pos, "metadata value length")
        pos += 4
        if vlen > MAX_META_VALUE:
            raise FormatError(f"metadata value length {vlen} exceeds {MAX_META_VALUE}")
        vb = _take(data, pos, vlen, "metadata value")
        pos += vlen
        if prev is not None and kb <= prev:
            raise FormatError("metadata keys are not strictly increasing (duplicate or unsorted)")
        prev = kb
        meta[_utf8(kb, "metadata key")] = _utf8(vb, "metadata value")
    if pos != len(data):
        raise FormatError(f"{len(data) - pos} unexpected bytes after the metadata")
    return Content(ptype, log2, payload_len, salt, commit, meta)


def parse_slots(data: bytes) -> list[KeySlot]:
    n = _u16(data, 0, "slot count")
    if not 1 <= n <= MAX_SLOTS:
        raise FormatError(f"{n} key slots (need 1..{MAX_SLOTS})")
    pos = 2
    slots = []
    for _ in range(n):
        stype = _take(data, pos, 1, "slot type")[0]
        blen = _u16(data, pos + 1, "slot length")
        body = _take(data, pos + 3, blen, "slot body")
        pos += 3 + blen
        slots.append(parse_slot(stype, body))  # exact length checks even for slots this reader may not open
    if pos != len(data):
        raise FormatError(f"{len(data) - pos} unexpected bytes after the key slots")
    for s in slots:
        if s.alone and len(slots) != 1:
            raise FormatError(f"a {s.kind} slot must be the only key slot")
    return slots


#: The largest signature entry (a composite one): bounds the trailer's entries before they are parsed.
MAX_SIG_ENTRY_SIZE = max(sig_entry_size(t) for t in SIG_TYPES)


def parse_signature_entries(data: bytes, count: int) -> list[SignatureEntry]:
    """``count`` entries, each sized by its type byte, filling ``data`` exactly."""
    out: list[SignatureEntry] = []
    seen: set[bytes] = set()
    pos = 0
    for _ in range(count):
        t = _take(data, pos, 1, "signature type")[0]
        _, pub_size, sig_size = SIG_TYPES.get(t) or (None, 0, 0)
        e = _take(data, pos, sig_entry_size(t), "signature entry")
        pos += len(e)
        pub = e[1 : 1 + pub_size]
        if pub in seen:
            raise FormatError("two signatures by the same key")
        seen.add(pub)
        (signed_at,) = struct.unpack_from("<Q", e, 1 + pub_size)
        out.append(SignatureEntry(t, pub, int(signed_at), e[9 + pub_size : 9 + pub_size + sig_size]))
    if pos != len(data):
        raise FormatError("signature block has the wrong length")
    return out


def trailer_len(n_signatures: int, n_chunks: int, entries_len: int | None = None) -> int:
    """The trailer's size; ``entries_len`` (default: all Ed25519 entries) is what the entries take."""
    if n_signatures == 0:
        return 2
    return 2 + n_chunks * DIGEST_SIZE + (n_signatures * SIG_ENTRY_SIZE if entries_len is None else entries_len)


def _take(data: bytes, pos: int, n: int, what: str) -> bytes:
    if pos + n > len(data):
        raise FormatError(f"{what} runs past the end of its section")
    return data[pos : pos + n]


def _u16(data: bytes, pos: int, what: str) -> int:
    return int(struct.unpack("<H", _take(data, pos, 2, what))[0])


def _u32(data: bytes, pos: int, what: str) -> int:
    return int(struct.unpack("<I", _take(data, pos, 4, what))[0])


def _utf8(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not valid UTF-8") from None
