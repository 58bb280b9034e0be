"""Opening a sealed file: unlock a key slot, authenticate the header, decrypt chunks into buffers."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, Literal

from .. import crypto
from .._pool import run_all, run_two
from ..crypto import TAG_SIZE, ChunkCipher
from ..errors import DecryptionError, FormatError, IntegrityError, InvalidArgumentError
from .header import Header, read_header
from .signatures import Signer, Trailer, Verifier, apply_policy, content_root, read_trailer
from .slots import OpenKey, open_slots
from .slots.scrypt import WRONG_PASSPHRASE, ScryptSlot
from .stream import GROUP_BYTES, ChunkStream, Source, default_workers

Region = tuple[int, memoryview]  # (payload offset, destination buffer)
Progress = Callable[[int], None]  # called with a number of bytes just processed
KeySource = Sequence[OpenKey] | Callable[[Header], Sequence[OpenKey]]

_SPLIT_MIN = 6  # chunks in a small read worth a second thread (measured: docs/PERFORMANCE.md, "Lazy reads")
_MAX_SPARE = 4  # scratch buffers a reader keeps for reuse: one per worker at most

#: ``unsigned``: no signature; ``signed, not verified``: every signature verifies over the signed
#: root, but not every chunk has yet been checked against the signed digest table in this
#: reader; ``verified``: both.
SignatureStatus = Literal["unsigned", "signed, not verified", "verified"]


def unlock(src: Source, keys: KeySource) -> tuple[Header, bytes]:
    """Parse the header, open a slot, check the key commitment and the header MAC."""
    header = read_header(src)
    dek = open_slots(header.slots, header.content.salt, keys(header) if callable(keys) else keys)
    fk = crypto.derive_file_keys(dek, header.content.salt)
    commitment_ok = crypto.equal(fk.commitment, header.content.commitment)
    mac_ok = crypto.equal(crypto.header_mac(fk.header_mac_key, header.authenticated), header.mac)
    if isinstance(header.slots[0], ScryptSlot) and not (commitment_ok and mac_ok):
        raise DecryptionError(WRONG_PASSPHRASE)  # the same as a slot that does not open (§5)
    if not commitment_ok:
        raise IntegrityError("key commitment does not match: the header was modified or forged")
    if not mac_ok:
        raise IntegrityError("header MAC does not verify: the header or a key slot was modified")
    return header, dek


def open_sealed(
    f: BinaryIO,
    keys: KeySource,
    *,
    trusted_signers: Sequence[Verifier] | None = None,
    require_signature: bool | None = None,
) -> SealedReader:
    """Authenticate header, key slot, key commitment, header MAC and signature policy.

    A signed file has every chunk it decrypts checked against the signed digest table, with or
    without a policy (docs/FORMAT.md §8); its signers count only once every chunk was checked.
    ``keys`` is a list of keys, or a function that picks keys after seeing the (unauthenticated)
    header, e.g. a keystore looking up the key ids its slots name.
    """
    src = Source(f)
    header, dek = unlock(src, keys)
    trailer = read_trailer(src, header, trusted_signers or ())
    apply_policy(trailer, trusted_signers, require_signature)
    return SealedReader(src, header, dek, trailer)


class SealedReader:
    """An authenticated, opened sealed file. Chunks are verified as they are decrypted: by their
    GCM tag, and, when the file is signed, against the signed digest table."""

    def __init__(self, src: Source, header: Header, dek: bytes, trailer: Trailer) -> None:
        self.header = header
        self.content = header.content
        self.trailer = trailer
        cipher = ChunkCipher(crypto.derive_file_keys(dek, header.content.salt).payload_key)
        self._stream = ChunkStream(src, header.size, header.content, trailer.table, cipher)
        self._check_digests = trailer.root is not None
        self._checked = bytearray(header.content.n_chunks if self._check_digests else 0)  # 1: digest matched
        self._expect_root: bytes | None = None
        self._digests: list[bytes] = []
        self._prefix: list[memoryview] = []  # plaintext of chunks 0..k, each in a buffer of its own
        self._spare: list[memoryview] = []  # scratch buffers for reuse (page faults cost more than AES)
        self._spare_lock = threading.Lock()

    def expect_root(self, root: bytes) -> None:
        """Require the content root (as a signed manifest lists it): every chunk is hashed while
        it is decrypted and the root compared before decryption counts as done."""
        if self.trailer.root is not None:
            if not crypto.equal(self.trailer.root, root):
                raise IntegrityError("file content does not match the digest the manifest lists")
            self._check_digests = True
            return
        self._expect_root = root
        self._digests = [b""] * self.content.n_chunks

    def finish(self) -> None:
        """After chunks were decrypted piecemeal (``only_covering``): run the whole-file checks."""
        if self._expect_root is not None:
            got = content_root(self.header.content_bytes, self.content.n_chunks, b"".join(self._digests))
            if not crypto.equal(got, self._expect_root):
                raise IntegrityError("file content does not match the digest the manifest lists")

    @property
    def signature_status(self) -> SignatureStatus:
        """Whether this reader has verified the signatures *and* every chunk digest they cover."""
        if self.trailer.root is None:
            return "unsigned"
        return "verified" if self._checked and all(self._checked) else "signed, not verified"

    @property
    def signers(self) -> list[Signer]:
        """The signers, only once every chunk was checked against their signed digests in this
        reader (after a full decrypt); empty before. See :attr:`unverified_signers`."""
        return self.trailer.signers if self.signature_status == "verified" else []

    @property
    def unverified_signers(self) -> list[Signer]:
        """Whose signatures verify over the signed root, whether or not the chunks were checked:
        a claim about the file, not about what this reader returned."""
        return self.trailer.signers

    def _take_scratch(self) -> memoryview:
        with self._spare_lock:
            if self._spare:
                return self._spare.pop()
        return self._stream.scratch()

    def _give_scratch(self, buf: memoryview) -> None:
        with self._spare_lock:
            if len(self._spare) < _MAX_SPARE:
                self._spare.append(buf)

    def _decrypt_chunk(self, i: int, ct_buf: memoryview, out: memoryview | None = None) -> memoryview:
        """Read, check and decrypt chunk ``i`` into ``out`` (or in place); return the plaintext view."""
        ct = self._stream.read(i, ct_buf)
        if self._check_digests:
            try:
                self._stream.digest(i, ct, check=True)
            except IntegrityError:
                self._stream.decrypt(i, ct)  # a tampered chunk fails its tag here, as when unsigned
                raise  # it authenticates under the DEK: re-encrypted by a key holder
            self._checked[i] = 1
        elif self._digests:
            self._digests[i] = self._stream.digest(i, ct, check=False)
        return self._stream.decrypt(i, ct, out)

    def read_prefix(self, n: int) -> bytes:
        """Decrypt and return the first ``n`` payload bytes (used to read the payload's own header).

        The chunks are decrypted in place in buffers of their own size and kept until
        :meth:`release_prefix`, so asking for more decrypts only the chunks not yet read."""
        c = self.content
        if n > c.payload_len:
            raise FormatError("payload shorter than its own header claims")
        have = sum(len(plain) for plain in self._prefix)
        while have < n:
            i = len(self._prefix)
            plain = self._decrypt_chunk(i, memoryview(bytearray(c.plain_len(i) + TAG_SIZE)))  # in place
            self._prefix.append(plain)
            have += len(plain)
        out = bytearray()
        for plain in self._prefix:
            if len(out) >= n:
                break
            out += plain[: n - len(out)]
        return bytes(out)

    def release_prefix(self) -> None:
        """Drop the chunks ``read_prefix`` keeps (once the payload header is parsed)."""
        self._prefix = []

    def write_plaintext(self, out: BinaryIO, progress: Progress | None = None, skip: int = 0) -> int:
        """Decrypt the payload chunk by chunk into ``out``, leaving out its first ``skip`` bytes
        (write to a temp file; publish it only after this returns, since bytes are written before
        the last chunk is checked)."""
        buf = self._stream.scratch()
        total = 0
        pos = 0
        for i in range(self.content.n_chunks):
            plain = self._decrypt_chunk(i, buf)
            start = min(max(skip - pos, 0), len(plain))
            pos += len(plain)
            out.write(plain[start:])
            total += len(plain) - start
            if progress is not None:
                progress(len(plain))
        self.finish()
        return total

    def decrypt_regions(
        self, regions: Sequence[Region], workers: int | None = None, *, only_covering: bool = False
    ) -> None:
        """Decrypt every chunk; bytes under a region land in it, the rest are checked and dropped.

        With ``only_covering``, decrypt only the chunks that overlap a region (lazy reads of one
        tensor); every chunk read is still authenticated, and digest-checked under a policy.

        Regions are sorted, non-overlapping ``(payload_offset, buffer)`` pairs. Raises on the first
        chunk that fails; the caller must then discard every region's buffer. A chunk that lies
        inside one region is decrypted straight into it; one that spans regions is decrypted in
        place in a per-thread scratch buffer and its pieces copied out.
        """
        c = self.content
        plan = _RegionIndex(regions)

        def job(group: list[int]) -> None:
            buf = self._take_scratch()
            for i in group:
                start = c.chunk_start(i)
                plen = c.plain_len(i)
                direct = plan.covering(start, plen)
                if direct is not None:
                    self._decrypt_chunk(i, buf, direct)
                else:
                    plain = self._decrypt_chunk(i, buf)
                    for dst, src_off, k in plan.pieces(start, plen):
                        dst[:] = plain[src_off : src_off + k]
            self._give_scratch(buf)  # not on failure: that buffer is simply dropped

        if only_covering:
            todo = sorted({i for off, mv in regions if len(mv) for i in c.chunks_for(off, len(mv))})
        else:
            todo = list(range(c.n_chunks))
        _run(job, c.groups(todo, GROUP_BYTES), workers)
        if not only_covering:
            self.finish()


def _run(job: Callable[[list[int]], None], todo: list[list[int]], workers: int | None) -> None:
    """Run ``job`` over the groups ``todo``, in threads when there is enough work; raise the first
    failure. A read of ``_SPLIT_MIN`` or more chunks but under four groups (a lazy read of one
    tensor) is cut in two halves: one for this thread, one for a single extra thread."""
    most = len(todo) // 2
    if most > 1:
        run_all(job, todo, min(workers or default_workers(), most), "sealedckpt-open")
        return
    chunks = [i for group in todo for i in group]
    if len(chunks) < _SPLIT_MIN or (workers or default_workers()) < 2:
        run_all(job, todo, 1, "sealedckpt-open")  # a thread costs more than a chunk or two
        return
    half = (len(chunks) + 1) // 2
    run_two(job, chunks[:half], chunks[half:], "sealedckpt-open")


class _RegionIndex:
    def __init__(self, regions: Sequence[Region]) -> None:
        self._starts = [r[0] for r in regions]
        self._regions = list(regions)
        for (a, ma), (b, _) in itertools.pairwise(regions):
            if a + len(ma) > b:
                raise InvalidArgumentError("regions overlap or are unsorted")

    def _first(self, start: int) -> int:
        return max(0, bisect.bisect_right(self._starts, start) - 1)

    def covering(self, start: int, n: int) -> memoryview | None:
        """A view of one region holding all of ``[start, start+n)``, if one does."""
        if not self._regions:
            return None
        off, mv = self._regions[self._first(start)]
        if off <= start and start + n <= off + len(mv):
            return mv[start - off : start - off + n]
        return None

    def pieces(self, start: int, n: int) -> Iterator[tuple[memoryview, int, int]]:
        """(destination view, offset within chunk, length) for each region overlapping the chunk."""
        end = start + n
        j = self._first(start)
        while j < len(self._regions):
            off, mv = self._regions[j]
            if off >= end:
                break
            lo, hi = max(start, off), min(end, off + len(mv))
            if lo < hi:
                yield mv[lo - off : hi - off], lo - start, hi - lo
            j += 1
