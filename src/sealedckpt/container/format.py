"""Byte layout of a sealed checkpoint (docs/FORMAT.md): parsing and building, no crypto.

Every length read from a file is checked against a cap before it is used. Key slot bodies are
parsed and built by their kinds (:mod:`.slots`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from ..crypto import COMPOSITE_ALG, DIGEST_SIZE, TAG_SIZE
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
DEFAULT_CHUNK_LOG2 = 20  # 1 MiB: a lazy read decrypts at most about one chunk more than it returns
MAX_CHUNKS = 1 << 22
MAX_SIGNATURES = 16

MAC_SIZE = 32

#: Signature algorithm codes of trailer entries (docs/FORMAT.md §8); names as in manifests.
SIG_ALGS = {1: "ed25519", 2: COMPOSITE_ALG}  # 2: Ed25519 + ML-DSA-65 composite (crypto/pq.py)
MAX_SIG_PUBLIC = 4096
MAX_SIG_BYTES = 8192
MAX_SIG_BLOCK = 1 << 19

_CONTENT_FIXED = struct.Struct("<BBHQQ32s32sH")  # type chunk_log2 reserved payload_len head_len salt commit n_meta


@dataclass(frozen=True)
class Content:
    """The signed part of the header, and the chunk layout it implies (docs/FORMAT.md §7).

    The payload is cut into two runs of ``chunk_size`` chunks: the *head* ``[0, head_len)`` (the
    payload's own header) and the *body* ``[head_len, payload_len)``, the last chunk of each run
    possibly shorter. Opening a file therefore decrypts exactly the head, and body chunks start
    at the first byte of the payload's data section.
    """

    payload_type: int
    chunk_log2: int
    payload_len: int
    salt: bytes
    commitment: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    head_len: int = 0

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2

    @cached_property
    def n_head(self) -> int:
        """Chunks in the head run."""
        return -(-self.head_len >> self.chunk_log2)

    @cached_property
    def n_chunks(self) -> int:
        return max(1, self.n_head + (-(-(self.payload_len - self.head_len) >> self.chunk_log2)))

    def chunk_start(self, index: int) -> int:
        """Payload offset of chunk ``index``'s first plaintext byte."""
        nh = self.n_head
        if index < nh:
            return index << self.chunk_log2
        return self.head_len + ((index - nh) << self.chunk_log2)

    def plain_len(self, index: int) -> int:
        """Plaintext length of chunk ``index``."""
        start = self.chunk_start(index)
        end = self.head_len if index < self.n_head else self.payload_len
        return min(self.chunk_size, end - start)

    def chunk_offset(self, index: int) -> int:
        """Offset of chunk ``index`` (ciphertext and tag) from the start of chunk 0."""
        return self.chunk_start(index) + index * TAG_SIZE

    def chunk_at(self, pos: int) -> int:
        """Index of the chunk holding payload byte ``pos`` (``0 <= pos < payload_len``)."""
        if pos < self.head_len:
            return pos >> self.chunk_log2
        return self.n_head + ((pos - self.head_len) >> self.chunk_log2)

    def chunks_for(self, start: int, n: int) -> range:
        """The chunks holding payload bytes ``[start, start + n)`` (``n > 0``)."""
        return range(self.chunk_at(start), self.chunk_at(start + n - 1) + 1)

    @property
    def max_plain_len(self) -> int:
        """The longest chunk's plaintext length."""
        longest = max(self.head_len, self.payload_len - self.head_len)
        return min(self.chunk_size, longest)

    def groups(self, chunks: Sequence[int], size: int) -> list[list[int]]:
        """``chunks`` (ascending) cut into runs of consecutive chunks, each run at most ``size``
        plaintext bytes unless one chunk alone is longer: the unit of work of the thread pools."""
        out: list[list[int]] = []
        run: list[int] = []
        have = 0
        for i in chunks:
            n = self.plain_len(i)
            if run and (i != run[-1] + 1 or have + n > size):
                out.append(run)
                run, have = [], 0
            run.append(i)
            have += n
        if run:
            out.append(run)
        return out

    @property
    def ciphertext_len(self) -> int:
        return self.payload_len + self.n_chunks * TAG_SIZE


@dataclass(frozen=True)
class SignatureEntry:
    """One trailer signature: algorithm name, public key, the exact statement bytes, signature."""

    alg: str
    public_key: bytes
    statement: bytes
    signature: bytes

    def build(self) -> bytes:
        code = next((c for c, name in SIG_ALGS.items() if name == self.alg), None)
        if code is None:
            raise InvalidArgumentError(f"unknown signature algorithm {self.alg!r}")
        if len(self.public_key) > MAX_SIG_PUBLIC or len(self.signature) > MAX_SIG_BYTES or len(self.statement) > 4096:
            raise InvalidArgumentError("signature entry field over its cap")
        return (bytes([code]) + struct.pack("<H", len(self.public_key)) + self.public_key
                + struct.pack("<H", len(self.statement)) + self.statement
                + struct.pack("<H", len(self.signature)) + self.signature)  # fmt: skip


def max_payload_len(chunk_log2: int) -> int:
    return MAX_CHUNKS << chunk_log2


def default_chunk_log2(payload_len: int) -> int:
    """The default chunk size, or the smallest larger one that keeps the payload within
    ``MAX_CHUNKS`` chunks (a head run adds at most one)."""
    log2 = DEFAULT_CHUNK_LOG2
    while log2 < MAX_CHUNK_LOG2 and payload_len + (1 << log2) > max_payload_len(log2):
        log2 += 1
    return log2


# --- building -----------------------------------------------------------------------------


def build_content(c: Content) -> bytes:
    if not MIN_CHUNK_LOG2 <= c.chunk_log2 <= MAX_CHUNK_LOG2:
        raise InvalidArgumentError("chunk_log2 out of range")
    if not 0 <= c.head_len <= c.payload_len:
        raise InvalidArgumentError("head_len must lie within the payload")
    if c.payload_len > max_payload_len(c.chunk_log2) or c.n_chunks > MAX_CHUNKS:
        raise InvalidArgumentError("payload too large for this chunk size")
    items = _canonical_metadata(c.metadata)
    fixed = (c.payload_type, c.chunk_log2, 0, c.payload_len, c.head_len, c.salt, c.commitment, len(items))
    parts = [_CONTENT_FIXED.pack(*fixed)]
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
    block = b"".join(s.build() for s in signatures)
    if len(block) > MAX_SIG_BLOCK:
        raise InvalidArgumentError(f"signature block over {MAX_SIG_BLOCK} bytes")
    return head + table + struct.pack("<I", len(block)) + block


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
    ptype, log2, reserved, payload_len, head_len, salt, commit, n_meta = _CONTENT_FIXED.unpack_from(data, 0)
    if ptype != PAYLOAD_SAFETENSORS:
        raise FormatError(f"unknown payload type {ptype}")
    if not MIN_CHUNK_LOG2 <= log2 <= MAX_CHUNK_LOG2:
        raise FormatError(f"chunk size 2**{log2} outside 2**{MIN_CHUNK_LOG2}..2**{MAX_CHUNK_LOG2}")
    if reserved != 0:
        raise FormatError("reserved content bytes are not zero")
    if payload_len > max_payload_len(log2):
        raise FormatError(f"payload length {payload_len} exceeds the cap for this chunk size")
    if head_len > payload_len:
        raise FormatError(f"head length {head_len} exceeds the payload length {payload_len}")
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
    content = Content(ptype, log2, payload_len, salt, commit, meta, head_len)
    if content.n_chunks > MAX_CHUNKS:
        raise FormatError(f"{content.n_chunks} chunks (cap {MAX_CHUNKS})")
    return content


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


def parse_signature_entries(data: bytes, count: int) -> list[SignatureEntry]:
    """Exactly ``count`` entries filling ``data``: known algorithms, fields within their caps,
    no public key twice. Statements and signatures are checked by the caller."""
    out: list[SignatureEntry] = []
    seen: set[bytes] = set()
    pos = 0
    for _ in range(count):
        code = _take(data, pos, 1, "signature entry")[0]
        if code not in SIG_ALGS:
            raise FormatError(f"unknown signature algorithm {code}")
        fields = []
        pos += 1
        for what, cap in (("public key", MAX_SIG_PUBLIC), ("statement", 4096), ("signature", MAX_SIG_BYTES)):
            n = _u16(data, pos, f"signature {what} length")
            if n > cap:
                raise FormatError(f"signature {what} of {n} bytes (cap {cap})")
            fields.append(_take(data, pos + 2, n, f"signature {what}"))
            pos += 2 + n
        if fields[0] in seen:
            raise FormatError("two signatures by the same key")
        seen.add(fields[0])
        out.append(SignatureEntry(SIG_ALGS[code], fields[0], fields[1], fields[2]))
    if pos != len(data):
        raise FormatError("signature block has the wrong length")
    return out


def trailer_len(n_signatures: int, n_chunks: int, block_len: int = 0) -> int:
    """The trailer's length: the count, and when signed the digest table, u32 block length, block."""
    if n_signatures == 0:
        return 2
    return 2 + n_chunks * DIGEST_SIZE + 4 + block_len


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
