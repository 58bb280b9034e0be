"""Sealing: header, the parallel chunk encryption pipeline, and the trailer."""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from .. import crypto
from ..crypto import SALT_SIZE, TAG_SIZE, ChunkCipher, FileKeys, SigningKey
from ..errors import InvalidArgumentError
from . import format as fmt
from .reader import Progress
from .signatures import content_digest, content_root, sign
from .slots import KeySlot, SealKey, make_slots, seal_label
from .stream import GROUP_BYTES, default_workers


@dataclass(frozen=True)
class SealSummary:
    bytes_written: int
    key_ids: list[str]
    signer_ids: list[str]
    root: bytes | None
    commitment: bytes = b""

    @property
    def digest(self) -> str:
        return content_digest(self.root, self.commitment)


def seal(
    out: BinaryIO,
    payload_len: int,
    segments: Iterable[memoryview],
    *,
    keys: Sequence[SealKey],
    signers: Sequence[SigningKey] = (),
    metadata: dict[str, str] | None = None,
    chunk_log2: int | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    now: Callable[[], float] = time.time,
    workers: int | None = None,
    progress: Progress | None = None,
    want_root: bool = False,
    expires_at: int | None = None,
) -> SealSummary:
    """Encrypt ``segments`` (exactly ``payload_len`` bytes in total) into ``out``.

    The head run of chunks ends where the payload's safetensors header does (docs/FORMAT.md §7),
    read from the payload's first 8 bytes. The summary's ``root`` is set when signing, or when
    ``want_root`` (a manifest lists it). ``chunk_log2`` defaults to 1 MiB chunks (larger ones for a
    payload over 4 TiB)."""
    if len({s.key_id for s in signers}) != len(signers):
        raise InvalidArgumentError("the same signing key was given twice")
    head_len, segments = _head_len(segments, payload_len)
    dek = random_bytes(crypto.KEY_SIZE)
    salt = random_bytes(SALT_SIZE)
    fk = crypto.derive_file_keys(dek, salt)
    meta = dict(metadata or {})
    log2 = fmt.default_chunk_log2(payload_len) if chunk_log2 is None else chunk_log2
    content = fmt.Content(fmt.PAYLOAD_SAFETENSORS, log2, payload_len, salt, fk.commitment, meta, head_len)
    content_bytes = fmt.build_content(content)
    written = _write_header(out, content_bytes, make_slots(dek, salt, keys, random_bytes), fk)
    hashing = bool(signers) or want_root
    pipeline = _Pipeline(out, content, ChunkCipher(fk.payload_key), hashing, workers, progress)
    written += pipeline.run(segments)
    root = content_root(content_bytes, content.n_chunks, b"".join(pipeline.digests)) if hashing else None
    if signers:
        assert root is not None
        trailer = fmt.build_trailer(b"".join(pipeline.digests), sign(signers, root, content.metadata, now,
                                                                     expires_at=expires_at))  # fmt: skip
    else:
        trailer = fmt.build_trailer(b"", [])
    out.write(trailer)
    written += len(trailer)
    return SealSummary(written, [seal_label(k) for k in keys], [s.key_id for s in signers], root, fk.commitment)


def _head_len(segments: Iterable[memoryview], payload_len: int) -> tuple[int, Iterator[memoryview]]:
    """The head length (8 + the safetensors header length in the payload's first 8 bytes, capped
    at the payload length), and the segments, none consumed."""
    it = iter(segments)
    taken: list[memoryview] = []
    prefix = b""
    while len(prefix) < 8:
        seg = next(it, None)
        if seg is None:
            break
        mv = _flat(seg)
        taken.append(mv)
        prefix += bytes(mv[: 8 - len(prefix)])
    head = payload_len if len(prefix) < 8 else min(payload_len, 8 + int.from_bytes(prefix, "little"))
    return head, itertools.chain(taken, it)


def _write_header(out: BinaryIO, content_bytes: bytes, slots: Sequence[KeySlot], fk: FileKeys) -> int:
    """Preamble, content header, key slots and header MAC; returns the bytes written."""
    authenticated = fmt.build_preamble(len(content_bytes)) + content_bytes + fmt.build_slots(slots)
    out.write(authenticated)
    out.write(crypto.header_mac(fk.header_mac_key, authenticated))
    return len(authenticated) + fmt.MAC_SIZE


class _Pipeline:
    """Encrypt chunks in a thread pool and write them in order, a bounded window in flight.

    Consecutive chunks are encrypted in groups of about 4 MiB, one buffer per group in flight,
    written with one call. A chunk made of several pieces is gathered into its place in that buffer
    and encrypted in place; a chunk inside one segment is encrypted from the caller's memory.
    """

    def __init__(
        self,
        out: BinaryIO,
        content: fmt.Content,
        cipher: ChunkCipher,
        hashing: bool,
        workers: int | None,
        progress: Progress | None,
    ) -> None:
        self._out = out
        self._content = content
        self._cipher = cipher
        self._progress = progress
        n = content.n_chunks
        self._hashing = hashing
        self.digests: list[bytes] = [b""] * n if hashing else []
        self._groups = content.groups(range(n), GROUP_BYTES)
        self._workers = min(workers or default_workers(), len(self._groups))
        size = max(sum(content.plain_len(i) + TAG_SIZE for i in g) for g in self._groups)
        self._bufs = [memoryview(bytearray(size)) for _ in range(min(self._workers + 1, len(self._groups)))]
        self._pending: deque[Future[memoryview]] = deque()
        self._written = 0

    def _job(self, chunks: list[tuple[int, memoryview, memoryview]], out: memoryview) -> memoryview:
        last = self._content.n_chunks - 1
        for i, plain, ct in chunks:
            self._cipher.encrypt_into(i, i == last, plain, ct)
            if self._hashing:
                self.digests[i] = crypto.content_hash(ct)
        return out

    def _write_oldest(self) -> None:
        ct = self._pending.popleft().result()
        self._out.write(ct)
        self._written += len(ct)
        if self._progress is not None:
            self._progress(len(ct))

    def run(self, segments: Iterable[memoryview]) -> int:
        """Encrypt and write every chunk; returns the bytes written."""
        c = self._content
        pool = None
        if self._workers > 1:
            pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="sealedckpt-seal")
        pieces = _chunk_pieces(segments, c)
        try:
            for k, group in enumerate(self._groups):
                if len(self._pending) == len(self._bufs):
                    self._write_oldest()
                buf = self._bufs[k % len(self._bufs)]
                chunks, pos = [], 0
                for i in group:
                    p = next(pieces, None)
                    plen = sum(len(x) for x in p) if p is not None else -1
                    if plen != c.plain_len(i):
                        raise InvalidArgumentError("payload is shorter than declared")
                    ct = buf[pos : pos + plen + TAG_SIZE]
                    pos += plen + TAG_SIZE
                    assert p is not None
                    chunks.append((i, p[0] if len(p) == 1 else _gather(p, ct), ct))
                if pool is None:
                    fut: Future[memoryview] = Future()
                    fut.set_result(self._job(chunks, buf[:pos]))
                else:
                    fut = pool.submit(self._job, chunks, buf[:pos])
                self._pending.append(fut)
            if next(pieces, None) is not None:
                raise InvalidArgumentError("payload is longer than declared")
            while self._pending:
                self._write_oldest()
        finally:
            for fut in self._pending:
                fut.cancel()
            if pool is not None:
                pool.shutdown(wait=True)
        return self._written


def _gather(pieces: list[memoryview], buf: memoryview) -> memoryview:
    """Copy ``pieces`` to the start of ``buf``; return the filled view."""
    pos = 0
    for p in pieces:
        buf[pos : pos + len(p)] = p
        pos += len(p)
    return buf[:pos]


def _flat(seg: memoryview) -> memoryview:
    return seg.cast("B") if seg.format != "B" or seg.ndim != 1 else seg


def _chunk_pieces(segments: Iterable[memoryview], content: fmt.Content) -> Iterator[list[memoryview]]:
    """Group the payload's segments into one list of views per chunk (no copying here); a final
    extra list holds any bytes past the declared payload."""
    n = content.n_chunks
    i, need = 0, content.plain_len(0)
    pieces: list[memoryview] = []
    for seg in segments:
        mv = _flat(seg)
        pos = 0
        while pos < len(mv):
            if i >= n:
                yield [mv[pos:]]
                return
            take = min(need, len(mv) - pos)
            pieces.append(mv[pos : pos + take])
            need -= take
            pos += take
            if need == 0:
                yield pieces
                pieces, i = [], i + 1
                need = content.plain_len(i) if i < n else 0
    if i < n and (pieces or need == 0):
        yield pieces  # a short final chunk (caught by the caller), or the empty chunk of an empty payload
