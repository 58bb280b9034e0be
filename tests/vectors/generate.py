"""Deterministic generator of the sealed container v1 test vectors.

Usage: ``python tests/vectors/generate.py [OUT_DIR]`` (default: this folder). It writes one
``<name>.sealed`` file per case and one manifest, ``vectors.json``, that lists every case:
the file's SHA-256, the (test-only!) symmetric keys and trusted signer public keys to load it
with, and what loading must do: succeed with a described value, or raise a named error.

Everything is fixed (except two post-quantum draws frozen in kat/pq-frozen.json, see the PQ
section): randomness comes from a SHA-256 counter-mode DRBG seeded per case (it
also drives the X25519 ephemeral keys), the clock is ``NOW``, and every key is derived from
``SEED``. Running the generator twice gives byte-identical output; ``tests/test_vectors.py``
checks that against the committed files.

A case's ``keys`` are what to open it with. When they are all symmetric keys the manifest lists
them as hex strings (the original form); otherwise every entry is an object with a ``kind``:
``{"kind": "symmetric", "key": hex}``, ``{"kind": "recipient", "secret": hex, "public": hex}``
(an X25519 identity; ``public`` is informative), ``{"kind": "pq-recipient", ...}`` (the same for an
X-Wing seed) or ``{"kind": "passphrase", "passphrase": text,
"max_log2n": n}`` (UTF-8 text; ``max_log2n`` is the reader's scrypt work-factor cap). An error
case may also give ``expect.max_seconds``: opening must fail within that time.

Valid files come from ``sealedckpt.container.seal``. Invalid ones are made by parsing a valid
file with the small, independent implementation of the byte layout below and changing one
thing, then re-encrypting chunks, re-MACing the header or re-signing with the known DEK and
signing keys wherever needed, so that each file fails exactly at the check it targets.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import enum
import hashlib
import hmac
import io
import json
import math
import re
import struct
import sys
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import blake3
import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sealedckpt import (
    CompositeSigningKey,
    Passphrase,
    PQRecipientKey,
    RecipientKey,
    SigningKey,
    SymmetricKey,
    container,
)
from sealedckpt.payload.codec import plan_payload

HERE = Path(__file__).resolve().parent
MANIFEST = "vectors.json"
SEED = b"sealedckpt/v1 test vectors"
NOW = 1_700_000_000  # signed_at of every signature
CHUNK_LOG2 = 16
CS = 1 << CHUNK_LOG2
SMALL_TENSOR = 64  # tensors with more elements are described by a digest, not by their values

# --- the format, restated independently of the library (docs/FORMAT.md) ----------------------

MAGIC = b"\x89SCKPT\r\n"
TAG = 16
SLOT_AAD = b"sealedckpt/v1 symmetric slot\x00"
X25519_AAD = b"sealedckpt/v1 x25519 slot\x00"
SCRYPT_AAD = b"sealedckpt/v1 scrypt slot\x00"
INFO_X25519 = b"sealedckpt/v1 x25519 wrap key"
SLOT_SYMMETRIC, SLOT_X25519, SLOT_SCRYPT = 1, 2, 3
ZERO_NONCE = bytes(12)
ROOT_DOMAIN = b"sealedckpt/v1 root\x00"
PAYLOAD_TYPE = b"application/vnd.sealedckpt.statement+json"
STATEMENT_TYPE = "sealedckpt/statement/v1"
INFO_FILE_KEYS = b"sealedckpt/v1 file keys"
INFO_WRAP = b"sealedckpt/v1 symmetric wrap key"
SCRYPT_LABEL = b"sealedckpt/v1 scrypt salt\x00"
CONTENT_FIXED = struct.Struct("<BBHQQ32s32sH")


def u16(n: int) -> bytes:
    return struct.pack("<H", n)


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def b3(b: bytes) -> bytes:
    """BLAKE3-256, the format's content hash (chunk digests and root)."""
    return blake3.blake3(b).digest()


def flip(b: bytes, i: int, mask: int = 0x01) -> bytes:
    return b[:i] + bytes([b[i] ^ mask]) + b[i + 1 :]


def chunk_spans(payload_len: int, head_len: int, chunk_log2: int) -> list[tuple[int, int]]:
    """Plaintext ``(start, end)`` of every chunk: the head ``[0, head_len)`` and the body
    ``[head_len, payload_len)``, each cut every 2**chunk_log2 bytes; at least one chunk."""
    cs = 1 << chunk_log2
    spans = [(a, min(a + cs, head_len)) for a in range(0, head_len, cs)]
    spans += [(a, min(a + cs, payload_len)) for a in range(head_len, payload_len, cs)]
    return spans or [(0, 0)]


class Drbg:
    """SHA-256(seed || counter) stream: the fixed ``random_bytes`` of one case."""

    def __init__(self, label: str) -> None:
        self._seed = sha256(SEED + b"/drbg/" + label.encode())
        self._ctr = 0
        self._buf = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += sha256(self._seed + self._ctr.to_bytes(8, "big"))
            self._ctr += 1
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _secret(name: str) -> bytes:
    return sha256(SEED + b"/key/" + name.encode())


KEY_A = SymmetricKey(_secret("symmetric A"))
KEY_B = SymmetricKey(_secret("symmetric B"))
KEY_WRONG = SymmetricKey(_secret("symmetric wrong"))
SIGNER_1 = SigningKey(_secret("ed25519 signer 1"))
SIGNER_2 = SigningKey(_secret("ed25519 signer 2"))
SIGNER_EVIL = SigningKey(_secret("ed25519 untrusted"))
RECIPIENT_1 = RecipientKey(_secret("x25519 recipient 1"))
RECIPIENT_2 = RecipientKey(_secret("x25519 recipient 2"))
RECIPIENT_WRONG = RecipientKey(_secret("x25519 recipient wrong"))


@dataclass(frozen=True)
class PassKey:
    """A test passphrase: ``log2n`` seals, ``max_log2n`` is the reader's cap when opening."""

    text: str
    log2n: int = 10
    max_log2n: int = 20

    def lib(self) -> Passphrase:
        return Passphrase(self.text, log2n=self.log2n, max_log2n=self.max_log2n)


PASS = PassKey("sealedckpt test-vector passphrase")
PASS_WRONG = PassKey("sealedckpt wrong passphrase")

#: A key a case is opened with: symmetric key, X25519 identity or passphrase.
Key = SymmetricKey | RecipientKey | PassKey


def open_slot(key: Key, salt: bytes, slot: tuple[int, bytes]) -> bytes:
    """The DEK from ``slot`` with ``key`` (the independent restatement of FORMAT.md §5)."""
    t, body = slot
    if isinstance(key, SymmetricKey):
        assert t == SLOT_SYMMETRIC and len(body) == 68 and body[:8] == key.key_id_bytes
        return unwrap(key, salt, body)
    if isinstance(key, RecipientKey):
        assert t == SLOT_X25519 and len(body) == 80
        return x25519_unwrap(key, salt, body)
    assert t == SLOT_SCRYPT and len(body) == 65 and body[0] == key.log2n
    return AESGCM(scrypt_key(key.text, body[1:17], body[0])).decrypt(ZERO_NONCE, body[17:], SCRYPT_AAD + salt)


def expected_slots(rnd: Drbg, keys: Sequence[Key], dek: bytes, salt: bytes) -> list[tuple[int, bytes]]:
    """The slots ``seal`` must write, replaying its draws: a nonce[12] per symmetric key, an
    X25519 ephemeral private key[32] per recipient, a scrypt salt[16] per passphrase."""
    out = []
    for k in keys:
        if isinstance(k, SymmetricKey):
            nonce = rnd(12)
            out.append((SLOT_SYMMETRIC, k.key_id_bytes + nonce + wrap(k, dek, nonce, salt)))
        elif isinstance(k, RecipientKey):
            out.append((SLOT_X25519, x25519_wrap(k.public.to_bytes(), dek, salt, rnd(32))))
        else:
            out.append((SLOT_SCRYPT, scrypt_body(k.text, dek, salt, rnd(16), k.log2n)))
    return out


@dataclass(frozen=True)
class FileKeys:
    payload: bytes
    commitment: bytes
    mac: bytes


def file_keys(dek: bytes, salt: bytes) -> FileKeys:
    out = HKDF(algorithm=hashes.SHA256(), length=96, salt=salt, info=INFO_FILE_KEYS).derive(dek)
    return FileKeys(out[:32], out[32:64], out[64:])


def stream_nonce(i: int, final: bool) -> bytes:
    return i.to_bytes(11, "big") + bytes([1 if final else 0])


def encrypt_chunk(fk: FileKeys, i: int, final: bool, plain: bytes) -> bytes:
    return AESGCM(fk.payload).encrypt(stream_nonce(i, final), plain, None)


def decrypt_chunk(fk: FileKeys, i: int, final: bool, ct: bytes) -> bytes:
    return AESGCM(fk.payload).decrypt(stream_nonce(i, final), ct, None)


def _wrap_key(key: SymmetricKey, salt: bytes) -> AESGCM:
    """The per-file wrap key: HKDF with the file salt as HKDF salt."""
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO_WRAP).derive(key.to_bytes()))


def unwrap(key: SymmetricKey, salt: bytes, body: bytes) -> bytes:
    return _wrap_key(key, salt).decrypt(body[8:20], body[20:], SLOT_AAD + salt)


def wrap(key: SymmetricKey, dek: bytes, nonce: bytes, salt: bytes) -> bytes:
    return _wrap_key(key, salt).encrypt(nonce, dek, SLOT_AAD + salt)


def x25519_wrap(public: bytes, dek: bytes, salt: bytes, eph: bytes) -> bytes:
    """A type-2 slot body, ``share || wrapped``, for ephemeral private key ``eph``."""
    e = X25519PrivateKey.from_private_bytes(eph)
    share = e.public_key().public_bytes_raw()
    shared = e.exchange(X25519PublicKey.from_public_bytes(public))
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=share + public, info=INFO_X25519).derive(shared)
    return share + AESGCM(wk).encrypt(ZERO_NONCE, dek, X25519_AAD + salt)


def x25519_unwrap(identity: RecipientKey, salt: bytes, body: bytes) -> bytes:
    priv = X25519PrivateKey.from_private_bytes(identity.to_bytes())
    public = priv.public_key().public_bytes_raw()
    shared = priv.exchange(X25519PublicKey.from_public_bytes(body[:32]))
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=body[:32] + public, info=INFO_X25519).derive(shared)
    return AESGCM(wk).decrypt(ZERO_NONCE, body[32:], X25519_AAD + salt)


def scrypt_key(text: str, psalt: bytes, log2n: int) -> bytes:
    return Scrypt(salt=SCRYPT_LABEL + psalt, length=32, n=1 << log2n, r=8, p=1).derive(text.encode("utf-8"))


def scrypt_body(text: str, dek: bytes, salt: bytes, psalt: bytes, log2n: int) -> bytes:
    """A type-3 slot body, ``log2n || salt[16] || wrapped``."""
    return bytes([log2n]) + psalt + AESGCM(scrypt_key(text, psalt, log2n)).encrypt(ZERO_NONCE, dek, SCRYPT_AAD + salt)


def content_root(content: bytes, count: int, table: bytes) -> bytes:
    return b3(ROOT_DOMAIN + u32(len(content)) + content + u64(count) + table)


def statement(root: bytes, meta: dict[str, str], *, kind: str = "release", signed_at: int = NOW,
              expires_at: int | None = None) -> bytes:  # fmt: skip
    """A signed statement about ``root`` (FORMAT.md §8.1), encoded here independently: JSON,
    keys sorted, no whitespace, UTF-8, absent fields omitted."""
    doc: dict[str, Any] = {"_type": STATEMENT_TYPE, "type": kind, "subject": "blake3:" + root.hex(),
                           "signed_at": signed_at}  # fmt: skip
    for k in ("model", "version"):
        if k in meta:
            doc[k] = meta[k]
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(body: bytes) -> bytes:
    """DSSE's pre-authentication encoding."""
    return (
        b"DSSEv1 "
        + str(len(PAYLOAD_TYPE)).encode()
        + b" "
        + PAYLOAD_TYPE
        + b" "
        + str(len(body)).encode()
        + b" "
        + body
    )


def raw_entry(alg: int, pub: bytes, stmt: bytes, sig: bytes) -> bytes:
    return bytes([alg]) + u16(len(pub)) + pub + u16(len(stmt)) + stmt + u16(len(sig)) + sig


def sig_entry(
    signer: SigningKey, root: bytes, meta: dict[str, str] | None = None, *, claim: bytes | None = None,
    stmt: bytes | None = None, **kw: Any,
) -> bytes:  # fmt: skip
    """A trailer signature entry over a statement about ``root``; ``claim`` puts another public key in it."""
    pub = claim if claim is not None else signer.public.to_bytes()
    body = stmt if stmt is not None else statement(root, meta or {}, **kw)
    return raw_entry(1, pub, body, signer.sign(pae(body)))


def trailer(table: bytes, entries: Sequence[bytes]) -> bytes:
    block = b"".join(entries)
    return u16(len(entries)) + table + u32(len(block)) + block


@dataclass
class Content:
    payload_type: int
    chunk_log2: int
    reserved: int
    payload_len: int
    head_len: int
    salt: bytes
    commitment: bytes
    meta: list[tuple[bytes, bytes]]

    @classmethod
    def parse(cls, b: bytes) -> Content:
        ptype, log2, res, plen, hlen, salt, commit, n = CONTENT_FIXED.unpack_from(b, 0)
        pos, meta = CONTENT_FIXED.size, []
        for _ in range(n):
            (kl,) = struct.unpack_from("<H", b, pos)
            k = b[pos + 2 : pos + 2 + kl]
            pos += 2 + kl
            (vl,) = struct.unpack_from("<I", b, pos)
            meta.append((k, b[pos + 4 : pos + 4 + vl]))
            pos += 4 + vl
        assert pos == len(b)
        return cls(ptype, log2, res, plen, hlen, salt, commit, meta)

    def build(self) -> bytes:
        head = CONTENT_FIXED.pack(
            self.payload_type,
            self.chunk_log2,
            self.reserved,
            self.payload_len,
            self.head_len,
            self.salt,
            self.commitment,
            len(self.meta),
        )
        return head + b"".join(u16(len(k)) + k + u32(len(v)) + v for k, v in self.meta)


@dataclass
class Sealed:
    """A sealed file split into its parts; ``to_bytes`` puts them back together."""

    preamble: bytes
    content: bytes
    slots: list[tuple[int, bytes]]
    mac: bytes
    chunks: list[bytes]
    trailer: bytes
    dek: bytes = b""
    payload: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Sealed:
        assert data[:8] == MAGIC
        (clen,) = struct.unpack_from("<I", data, 12)
        content = data[16 : 16 + clen]
        c = Content.parse(content)
        pos = 16 + clen
        (slen,) = struct.unpack_from("<I", data, pos)
        sec = data[pos + 4 : pos + 4 + slen]
        (count,) = struct.unpack_from("<H", sec, 0)
        slots, sp = [], 2
        for _ in range(count):
            (t, bl) = struct.unpack_from("<BH", sec, sp)
            slots.append((t, sec[sp + 3 : sp + 3 + bl]))
            sp += 3 + bl
        assert sp == len(sec)
        pos += 4 + slen
        mac = data[pos : pos + 32]
        pos += 32
        chunks = []
        for a, b in chunk_spans(c.payload_len, c.head_len, c.chunk_log2):
            chunks.append(data[pos : pos + b - a + TAG])
            pos += b - a + TAG
        return cls(data[:16], content, slots, mac, chunks, data[pos:])

    @property
    def c(self) -> Content:
        return Content.parse(self.content)

    @property
    def fk(self) -> FileKeys:
        return file_keys(self.dek, self.c.salt)

    def slots_section(self, count: int | None = None) -> bytes:
        body = u16(len(self.slots) if count is None else count)
        body += b"".join(bytes([t]) + u16(len(b)) + b for t, b in self.slots)
        return u32(len(body)) + body

    def authenticated(self) -> bytes:
        return self.preamble + self.content + self.slots_section()

    def to_bytes(self) -> bytes:
        return self.authenticated() + self.mac + b"".join(self.chunks) + self.trailer

    # -- edits that keep everything else consistent --

    def set_content(self, c: Content, *, content_len: int | None = None) -> None:
        self.content = c.build()
        n = len(self.content) if content_len is None else content_len
        self.preamble = self.preamble[:12] + u32(n)

    def remac(self) -> None:
        self.mac = hmac.new(self.fk.mac, self.authenticated(), hashlib.sha256).digest()

    def rechunk(self, head_len: int) -> None:
        """Re-cut the payload with another head length: new content header, chunks and MAC."""
        c = self.c
        c.head_len = head_len
        self.set_content(c)
        spans = chunk_spans(len(self.payload), head_len, c.chunk_log2)
        n = len(spans)
        self.chunks = [encrypt_chunk(self.fk, i, i == n - 1, self.payload[a:b]) for i, (a, b) in enumerate(spans)]
        self.remac()

    def plaintexts(self) -> list[bytes]:
        fk, n = self.fk, len(self.chunks)
        return [decrypt_chunk(fk, i, i == n - 1, ct) for i, ct in enumerate(self.chunks)]

    def table(self) -> bytes:
        return b"".join(b3(ct) for ct in self.chunks)

    @property
    def metadata(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.c.meta}

    def root(self, table: bytes | None = None) -> bytes:
        return content_root(self.content, len(self.chunks), self.table() if table is None else table)

    def sign(self, *signers: SigningKey, table: bytes | None = None, **kw: Any) -> None:
        table = self.table() if table is None else table
        root = self.root(table)
        self.trailer = trailer(table, [sig_entry(s, root, self.metadata, **kw) for s in signers])


def seal(
    name: str,
    payload: bytes,
    *,
    keys: Sequence[Key] = (KEY_A,),
    signers: Sequence[SigningKey] = (),
    metadata: dict[str, str] | None = None,
) -> Sealed:
    """Seal ``payload`` with the library (fixed randomness and clock) and cross-check the result.

    ``keys`` are the keys that open the file: recipients are sealed to their public keys."""
    seal_keys = [k.public if isinstance(k, RecipientKey) else k.lib() if isinstance(k, PassKey) else k for k in keys]
    out = io.BytesIO()
    container.seal(
        out, len(payload), [memoryview(payload)], keys=seal_keys, signers=list(signers), metadata=metadata,
        chunk_log2=CHUNK_LOG2, random_bytes=Drbg(name), now=lambda: NOW, workers=1,
    )  # fmt: skip
    data = out.getvalue()
    s = Sealed.parse(data)
    rnd = Drbg(name)
    s.dek = rnd(32)  # the first draw of seal() is the DEK, the second the salt
    s.payload = payload
    # The independent reading of the layout must agree with the library's output.
    assert s.to_bytes() == data
    c = s.c
    assert rnd(32) == c.salt
    assert s.fk.commitment == c.commitment and c.payload_len == len(payload)
    assert c.head_len == min(len(payload), 8 + int.from_bytes(payload[:8], "little"))
    assert all(open_slot(k, c.salt, slot) == s.dek for k, slot in zip(keys, s.slots, strict=True))
    assert expected_slots(rnd, keys, s.dek, c.salt) == s.slots
    mac = s.mac
    s.remac()
    assert s.mac == mac
    assert b"".join(s.plaintexts()) == payload
    if signers:
        trailer = s.trailer
        s.sign(*signers)
        assert s.trailer == trailer
    else:
        assert s.trailer == u16(0)
    return s


# --- payloads ------------------------------------------------------------------------------


def obj_payload(obj: Any) -> bytes:
    plan = plan_payload(obj)
    data = b"".join(bytes(seg) for seg in plan.segments())
    assert len(data) == plan.payload_len
    return data


def st_payload(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    """Safetensors framing around a JSON header (given as an object or as raw bytes)."""
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return u64(len(raw)) + raw + data


def st_meta(structure: Any, *, raw: str | None = None) -> dict[str, str]:
    text = raw if raw is not None else json.dumps(structure, separators=(",", ":"))
    return {"sealedckpt.version": "1", "sealedckpt.structure": text}


def tensor_ref(
    entry: str, dtype: str, shape: list[int], stride: list[int] | None = None, offset: int = 0
) -> dict[str, Any]:
    if stride is None:
        stride = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    return {
        "t": "tensor",
        "e": entry,
        "dtype": dtype,
        "shape": shape,
        "stride": stride,
        "offset": offset,
        "device": "cpu",
    }


F32_DATA = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)


def handmade(structure: Any = None, entries: dict[str, Any] | None = None, data: bytes = F32_DATA, **kw: Any) -> bytes:
    """A hand-written payload: by default one F32[4] entry ``w`` and the structure {"w": tensor}."""
    if entries is None:
        entries = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    if structure is None:
        structure = {"t": "dict", "v": [["w", tensor_ref("w", "F32", [4])]]}
    return st_payload({"__metadata__": st_meta(structure, **kw), **entries}, data)


def small_obj() -> dict[str, Any]:
    return {
        "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4 - 0.5,
        "bias": torch.tensor([0.25, -1.0, 2.0]),
        "step": 7,
    }


def blob_body(label: str, n: int) -> tuple[dict[str, Any], bytes]:
    """{"blob": uint8 tensor of ``n`` DRBG bytes}: the payload's body (data section) is exactly it."""
    obj = {"blob": torch.frombuffer(bytearray(Drbg(label + "/blob")(n)), dtype=torch.uint8)}
    return obj, obj_payload(obj)


def checkpoint_obj() -> dict[Any, Any]:
    embed = torch.arange(12, dtype=torch.float32).reshape(4, 3) * 0.5 - 1.0
    model: OrderedDict[str, Any] = OrderedDict()
    model["embed.weight"] = embed
    model["lm_head.weight"] = embed  # tied
    model["embed.view"] = embed[1:3, ::2]  # a strided view into the same storage
    model["norm.weight"] = torch.ones(3, dtype=torch.bfloat16)
    model["norm.bias"] = torch.tensor([0.0, -0.0, 1.5], dtype=torch.float16)
    model["mask"] = torch.tensor([True, False, True])
    model["pos"] = torch.arange(4, dtype=torch.int64) - 2
    model._metadata = OrderedDict([("", {"version": 1}), ("embed", {"version": 2})])  # type: ignore[attr-defined]
    return {
        "model": model,
        "optimizer": {
            "state": {
                0: {"step": torch.tensor(10.0), "exp_avg": torch.full((4, 3), 0.125)},
                1: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3, dtype=torch.float16)},
            },
            "param_groups": [
                {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "foreach": None, "params": [0, 1]}
            ],
        },
        "epoch": 3,
        "best_loss": float("nan"),
        "history": [float("inf"), float("-inf"), 0.5, -0.0],
        "rng_state": b"\x00\x01\xfe\xff",
        "done": True,
        "note": None,
        "tags": ("a", 1, 2.5),
        (1, "x"): "tuple key",
        2.5: "float key",
        None: "none key",
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "size": torch.Size([2, 3]),
        "np": np.arange(4, dtype=np.int32),
        "np_scalar": np.float64(1.5),
        "param": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
    }


# --- describing loaded values as JSON ------------------------------------------------------


def _jsonable(x: Any) -> Any:
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return x


def describe(obj: Any, storages: dict[int, int] | None = None) -> Any:
    """A JSON description of a loaded object, exact enough for bitwise comparison.

    Tensors record dtype, shape, stride, storage offset, which storage they view (numbered in
    order of first appearance, so tied tensors share a number) and their bytes (as hex and as a
    value list when small, else as a SHA-256).
    """
    if storages is None:
        storages = {}
    t = type(obj)
    if obj is None:
        return {"none": None}
    if t in (bool, int, str):
        return {t.__name__: obj}
    if t is float:
        return {"float": obj.hex()}
    if t is bytes:
        return {"bytes": obj.hex()}
    if t is list:
        return {"list": [describe(v, storages) for v in obj]}
    if t is tuple:
        return {"tuple": [describe(v, storages) for v in obj]}
    if t in (dict, OrderedDict):
        out: dict[str, Any] = {
            "dict" if t is dict else "odict": [[describe(k, storages), describe(v, storages)] for k, v in obj.items()]
        }
        if hasattr(obj, "_metadata"):
            out["meta"] = describe(obj._metadata, storages)
        return out
    if t is torch.dtype:
        return {"torch.dtype": str(obj)}
    if t is torch.device:
        return {"torch.device": str(obj)}
    if t is torch.Size:
        return {"torch.Size": list(obj)}
    if t in (torch.Tensor, torch.nn.Parameter):
        raw = obj.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        d: dict[str, Any] = {
            "dtype": str(obj.dtype).removeprefix("torch."),
            "shape": list(obj.shape),
            "stride": list(obj.stride()),
            "offset": obj.storage_offset(),
            "storage": storages.setdefault(obj.untyped_storage().data_ptr(), len(storages)),
            "requires_grad": obj.requires_grad,
        }
        if obj.numel() <= SMALL_TENSOR:
            d["values"] = _jsonable(obj.detach().tolist())
            d["hex"] = raw.hex()
        else:
            d["sha256"] = hashlib.sha256(raw).hexdigest()
        return {"parameter" if t is torch.nn.Parameter else "tensor": d}
    if t is np.ndarray:
        return {"ndarray": {"dtype": obj.dtype.str, "shape": list(obj.shape), "hex": obj.tobytes().hex()}}
    if isinstance(obj, np.generic):
        return {"npscalar": {"dtype": obj.dtype.str, "hex": obj.tobytes().hex()}}
    return _describe_python(obj, storages)


def _describe_python(obj: Any, storages: dict[int, int]) -> Any:
    """The plain Python types of FORMAT.md §9.2 beyond JSON (sets, dates, enums, ...)."""
    t = type(obj)
    if t in (set, frozenset):
        members = [describe(v, storages) for v in obj]
        return {t.__name__: sorted(members, key=lambda d: json.dumps(d, sort_keys=True))}
    if t is complex:
        return {"complex": [obj.real.hex(), obj.imag.hex()]}
    if t in (datetime.datetime, datetime.time):
        return {t.__name__: obj.isoformat(), "tzname": obj.tzname(), "fold": obj.fold}
    if t in (datetime.date, decimal.Decimal, uuid.UUID):
        return {t.__name__: str(obj)}
    if t is datetime.timedelta:
        return {"timedelta": [obj.days, obj.seconds, obj.microseconds]}
    if isinstance(obj, PurePath):
        return {t.__name__: str(obj)}
    if isinstance(obj, enum.Enum):
        return {"enum": f"{t.__module__}:{t.__qualname__}.{obj.name}"}
    if t in (argparse.Namespace, types.SimpleNamespace):
        return {t.__name__: [[k, describe(v, storages)] for k, v in vars(obj).items()]}
    raise TypeError(f"cannot describe {t!r}")


# --- cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    data: bytes
    why: str
    error: str | None = None  # expected error class name; None: loads
    keys: Sequence[Key] = (KEY_A,)
    trusted: Sequence[SigningKey] | None = None
    value: Any = None  # the saved object, for valid cases
    payload: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)
    signers: Sequence[tuple[SigningKey, bool]] = ()  # (signer, trusted), for valid cases
    xfail: str | None = None
    max_seconds: float | None = None  # error cases: opening must fail within this time


CASES: list[Callable[[], Case]] = []


def case(fn: Callable[[], Case]) -> Callable[[], Case]:
    CASES.append(fn)
    return fn


def valid(name: str, s: Sealed, why: str, value: Any, **kw: Any) -> Case:
    return Case(name, s.to_bytes(), why, value=value, payload=s.payload, **kw)


def bad(name: str, s: Sealed | bytes, error: str, why: str, **kw: Any) -> Case:
    return Case(name, s if isinstance(s, bytes) else s.to_bytes(), why, error=error, **kw)


def small(name: str, **kw: Any) -> Sealed:
    return seal(name, obj_payload(small_obj()), **kw)


# valid files


@case
def valid_unsigned() -> Case:
    s = small("valid_unsigned")
    return valid("valid_unsigned", s, "unsigned file, one key slot", small_obj())


@case
def valid_two_keys() -> Case:
    s = small("valid_two_keys", keys=(KEY_A, KEY_B))
    return valid("valid_two_keys", s, "two key slots; either key alone opens it", small_obj(), keys=(KEY_A, KEY_B))


@case
def valid_signed() -> Case:
    s = small("valid_signed", signers=(SIGNER_1,))
    return valid(
        "valid_signed", s, "signed by a trusted key, loaded under a signature policy", small_obj(),
        trusted=(SIGNER_1,), signers=((SIGNER_1, True),),
    )  # fmt: skip


@case
def valid_countersigned() -> Case:
    s = small("valid_countersigned", signers=(SIGNER_1, SIGNER_2))
    return valid(
        "valid_countersigned", s, "two signatures; only the counter-signer is trusted", small_obj(),
        trusted=(SIGNER_2,), signers=((SIGNER_1, False), (SIGNER_2, True)),
    )  # fmt: skip


@case
def valid_public_metadata() -> Case:
    meta = {"arch": "tiny-mlp", "step": "7", "z\u00fcrich": "\u2713 caf\u00e9", "empty": ""}
    s = small("valid_public_metadata", metadata=meta)
    return valid("valid_public_metadata", s, "public metadata (sorted, UTF-8)", small_obj(), metadata=meta)


@case
def valid_multichunk() -> Case:
    obj, payload = blob_body("valid_multichunk", 2 * CS + 300)
    s = seal("valid_multichunk", payload, signers=(SIGNER_1,))
    assert len(s.chunks) == 4 and len(s.chunks[0]) == s.c.head_len + TAG
    return valid(
        "valid_multichunk", s,
        "the head chunk (the payload header) and three body chunks, the last partial; signed, so the table "
        "has four digests", obj,
        trusted=(SIGNER_1,), signers=((SIGNER_1, True),),
    )  # fmt: skip


@case
def valid_two_full_chunks() -> Case:
    obj, payload = blob_body("valid_two_full_chunks", 2 * CS)
    s = seal("valid_two_full_chunks", payload)
    assert len(s.chunks) == 3 and len(s.chunks[1]) == len(s.chunks[2]) == CS + TAG
    return valid(
        "valid_two_full_chunks", s, "the head, then a body of exactly two full chunks: the last is full and final", obj
    )


@case
def valid_head_two_chunks() -> Case:
    obj = {f"t{i:05d}": torch.full((1,), float(i)) for i in range(400)}  # a payload header over 64 KiB
    s = seal("valid_head_two_chunks", obj_payload(obj))
    c = s.c
    assert CS < c.head_len <= 2 * CS and len(s.chunks) == 3 and len(s.chunks[1]) == c.head_len - CS + TAG
    return valid(
        "valid_head_two_chunks", s,
        "a payload header longer than a chunk: two head chunks, the second partial, then one body chunk", obj,
    )  # fmt: skip


@case
def valid_grease_slot() -> Case:
    s = small("valid_grease_slot")
    s.slots.insert(0, (0x7A, Drbg("valid_grease_slot/grease")(40)))
    s.remac()
    return valid("valid_grease_slot", s, "an unknown slot type 0x7a before the real slot is skipped", small_obj())


@case
def valid_checkpoint() -> Case:
    s = seal("valid_checkpoint", obj_payload(checkpoint_obj()))
    return valid(
        "valid_checkpoint", s,
        "checkpoint-like object: int/tuple/float/None dict keys, tuple, nan/inf, None, bool, bytes, "
        "OrderedDict with _metadata, tied tensors and a view, dtype/device/Size, numpy, Parameter",
        checkpoint_obj(),
    )  # fmt: skip


def python_types_obj() -> dict[str, Any]:
    ist = datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")
    return {
        "set": {3, "a", (1, 2), None},
        "frozenset": frozenset({b"x", 2.5}),
        "datetime": datetime.datetime(2024, 2, 29, 23, 59, 59, 123456),
        "aware": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=ist),
        "date": datetime.date(2024, 1, 2),
        "time": datetime.time(12, 30, tzinfo=datetime.UTC),
        "timedelta": datetime.timedelta(days=-2, seconds=5, microseconds=7),
        "complex": complex(1.5, float("-inf")),
        "enum": re.RegexFlag.IGNORECASE,
        "namespace": argparse.Namespace(lr=0.001, layers=[4, 4]),
        "simplens": types.SimpleNamespace(w=torch.tensor([1.0, 2.0])),
        "paths": (PurePosixPath("/data/run"), PureWindowsPath("C:\\data\\run")),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": decimal.Decimal("-0.00100"),
        datetime.date(2020, 1, 1): "date key",
    }


@case
def valid_python_types() -> Case:
    s = seal("valid_python_types", obj_payload(python_types_obj()))
    return valid(
        "valid_python_types", s,
        "set, frozenset, naive and named fixed-offset datetime, date, time, timedelta, complex, enum "
        "member of an imported module (re.RegexFlag), argparse and simple namespaces, pure paths, UUID, "
        "Decimal, a date as a dict key",
        python_types_obj(),
    )  # fmt: skip


@case
def valid_handmade_payload() -> Case:
    s = seal("valid_handmade_payload", handmade())
    value = {"w": torch.frombuffer(bytearray(F32_DATA), dtype=torch.float32)}
    return valid(
        "valid_handmade_payload", s, "hand-written safetensors payload (the framing of payload_* cases)", value
    )


@case
def valid_bool_view_of_u8() -> Case:
    x = torch.tensor([0, 1, 7], dtype=torch.uint8)
    obj = {"x": x, "b": x[:2].view(torch.bool)}  # the bool view sees only the bytes 0 and 1
    s = seal("valid_bool_view_of_u8", obj_payload(obj))
    return valid(
        "valid_bool_view_of_u8",
        s,
        "a bool view over the first two bytes of a uint8 storage that also holds 7: save accepts it",
        obj,
    )


# preamble and content


@case
def bad_magic() -> Case:
    s = small("bad_magic")
    s.preamble = flip(s.preamble, 5)  # "\x89SCKPT" -> "\x89SCKQT"
    return bad("bad_magic", s, "UnsafePayloadError", "wrong magic: sniff refuses unknown content")


@case
def version_2() -> Case:
    s = small("version_2")
    s.preamble = s.preamble[:8] + b"\x02" + s.preamble[9:]
    s.remac()
    return bad("version_2", s, "FormatError", "format version 2 (header re-MACed)")


@case
def preamble_reserved_set() -> Case:
    s = small("preamble_reserved_set")
    s.preamble = s.preamble[:10] + b"\x01" + s.preamble[11:]
    s.remac()
    return bad("preamble_reserved_set", s, "FormatError", "reserved preamble byte set (header re-MACed)")


@case
def content_len_over_cap() -> Case:
    s = small("content_len_over_cap")
    s.set_content(s.c, content_len=(1 << 20) + 1)
    s.remac()
    return bad("content_len_over_cap", s, "FormatError", "content_len 2**20+1 exceeds the cap")


@case
def content_len_under_min() -> Case:
    s = small("content_len_under_min")
    s.set_content(s.c, content_len=CONTENT_FIXED.size - 1)
    s.remac()
    return bad("content_len_under_min", s, "FormatError", "content_len 77 is below the fixed content size 78")


@case
def truncated_preamble() -> Case:
    data = small("truncated_preamble").to_bytes()[:12]
    return bad("truncated_preamble", data, "IntegrityError", "file ends inside the preamble (magic intact)")


@case
def truncated_content() -> Case:
    data = small("truncated_content").to_bytes()[:56]
    return bad("truncated_content", data, "IntegrityError", "file ends inside the content header")


def _chunk_log2_case(name: str, log2: int) -> Case:
    s = small(name)
    c = s.c
    assert len(s.payload) < 1 << 15  # a head and a body chunk either way: only the range check catches it
    c.chunk_log2 = log2
    s.set_content(c)
    s.remac()
    return bad(name, s, "FormatError", f"chunk_log2 {log2} outside 16..24 (header re-MACed)")


@case
def chunk_log2_15() -> Case:
    return _chunk_log2_case("chunk_log2_15", 15)


@case
def chunk_log2_25() -> Case:
    return _chunk_log2_case("chunk_log2_25", 25)


@case
def payload_len_over_cap() -> Case:
    s = small("payload_len_over_cap")
    c = s.c
    c.payload_len = (1 << 22 << 16) + 1
    s.set_content(c)
    s.remac()
    return bad("payload_len_over_cap", s, "FormatError", "payload_len above 2**22 chunks of 2**16 (header re-MACed)")


@case
def head_len_over_payload() -> Case:
    s = small("head_len_over_payload")
    c = s.c
    c.head_len = c.payload_len + 1
    s.set_content(c)
    s.remac()
    return bad("head_len_over_payload", s, "FormatError", "head_len above payload_len (header re-MACed)")


@case
def head_len_zero() -> Case:
    s = small("head_len_zero")
    s.rechunk(0)
    return bad(
        "head_len_zero", s, "FormatError",
        "head_len 0 (every chunk cut from payload offset 0), chunks re-encrypted to match and the header "
        "re-MACed: the payload header does not end where the head does",
    )  # fmt: skip


@case
def head_len_short() -> Case:
    s = small("head_len_short")
    s.rechunk(s.c.head_len - 8)
    return bad(
        "head_len_short", s, "FormatError",
        "head_len 8 bytes short of the payload header, chunks re-encrypted to match and the header re-MACed",
    )  # fmt: skip


@case
def content_reserved_set() -> Case:
    s = small("content_reserved_set")
    c = s.c
    c.reserved = 1
    s.set_content(c)
    s.remac()
    return bad("content_reserved_set", s, "FormatError", "reserved u16 in the content set (header re-MACed)")


def _meta_case(name: str, meta: list[tuple[bytes, bytes]], why: str) -> Case:
    s = small(name, metadata={"a": "1"})
    c = s.c
    c.meta = meta
    s.set_content(c)
    s.remac()
    return bad(name, s, "FormatError", why + " (header re-MACed)")


@case
def meta_unsorted() -> Case:
    return _meta_case("meta_unsorted", [(b"b", b"1"), (b"a", b"2")], "metadata keys out of order")


@case
def meta_duplicate_key() -> Case:
    return _meta_case("meta_duplicate_key", [(b"a", b"1"), (b"a", b"2")], "metadata key repeated")


@case
def meta_non_utf8() -> Case:
    return _meta_case("meta_non_utf8", [(b"a", b"\xff\xfe")], "metadata value is not UTF-8")


# key slots


@case
def zero_slots() -> Case:
    s = small("zero_slots")
    s.slots = []
    s.remac()
    return bad("zero_slots", s, "FormatError", "slot count 0 (header re-MACed)")


@case
def slots_65() -> Case:
    s = small("slots_65")
    rnd = Drbg("slots_65/extra")
    s.slots += [(0x7A, rnd(16)) for _ in range(64)]
    s.remac()
    return bad("slots_65", s, "FormatError", "65 key slots, cap 64 (header re-MACed)")


@case
def symmetric_slot_67() -> Case:
    s = small("symmetric_slot_67")
    t, body = s.slots[0]
    s.slots[0] = (t, body[:67])
    s.remac()
    return bad("symmetric_slot_67", s, "FormatError", "symmetric slot body of 67 bytes, must be 68 (header re-MACed)")


@case
def slot_type_0() -> Case:
    s = small("slot_type_0")
    s.slots.insert(0, (0, Drbg("slot_type_0/body")(68)))
    s.remac()
    return bad("slot_type_0", s, "FormatError", "slot type 0 is reserved (header re-MACed)")


@case
def wrong_key() -> Case:
    s = small("wrong_key")
    return bad("wrong_key", s, "DecryptionError", "no slot opens with the given key", keys=(KEY_WRONG,))


@case
def key_id_hint_altered() -> Case:
    s = small("key_id_hint_altered")
    t, body = s.slots[0]
    s.slots[0] = (t, flip(body, 0))
    return bad("key_id_hint_altered", s, "IntegrityError", "key-id hint changed: slot still opens, header MAC fails")


@case
def header_mac_flipped() -> Case:
    s = small("header_mac_flipped")
    s.mac = flip(s.mac, 31)
    return bad("header_mac_flipped", s, "IntegrityError", "one bit of the header MAC flipped")


@case
def commitment_wrong() -> Case:
    s = small("commitment_wrong")
    c = s.c
    c.commitment = flip(c.commitment, 0)
    s.set_content(c)
    s.remac()
    return bad("commitment_wrong", s, "IntegrityError", "key commitment altered, header MAC recomputed")


# chunks


@case
def chunk_tag_flipped() -> Case:
    s = small("chunk_tag_flipped")
    s.chunks[0] = flip(s.chunks[0], len(s.chunks[0]) - 1)
    return bad("chunk_tag_flipped", s, "IntegrityError", "one bit of the chunk's GCM tag flipped")


@case
def chunk_body_flipped() -> Case:
    s = small("chunk_body_flipped")
    s.chunks[0] = flip(s.chunks[0], 0)
    return bad("chunk_body_flipped", s, "IntegrityError", "one bit of the chunk ciphertext flipped")


@case
def chunks_swapped() -> Case:
    _, payload = blob_body("chunks_swapped", 2 * CS)
    s = seal("chunks_swapped", payload)
    s.chunks = [s.chunks[0], s.chunks[2], s.chunks[1]]
    return bad("chunks_swapped", s, "IntegrityError", "two full body chunks swapped")


@case
def chunk_spliced() -> Case:
    s = small("chunk_spliced")
    other = small("chunk_spliced/other")  # same key, same payload, another DEK
    s.chunks[0] = other.chunks[0]
    return bad("chunk_spliced", s, "IntegrityError", "chunk taken from another file sealed with the same key")


@case
def last_chunk_not_final() -> Case:
    s = small("last_chunk_not_final")
    last = len(s.chunks) - 1
    s.chunks[last] = encrypt_chunk(s.fk, last, False, s.payload[s.c.head_len :])
    return bad("last_chunk_not_final", s, "IntegrityError", "last chunk re-encrypted without the final flag")


@case
def nonlast_chunk_final() -> Case:
    _, payload = blob_body("nonlast_chunk_final", CS + 200)
    s = seal("nonlast_chunk_final", payload)
    h = s.c.head_len
    s.chunks[1] = encrypt_chunk(s.fk, 1, True, payload[h : h + CS])
    return bad("nonlast_chunk_final", s, "IntegrityError", "chunk 1 of 3 re-encrypted with the final flag")


@case
def extra_empty_final_chunk() -> Case:
    _, payload = blob_body("extra_empty_final_chunk", CS)
    s = seal("extra_empty_final_chunk", payload)
    h = s.c.head_len
    s.chunks = [s.chunks[0], encrypt_chunk(s.fk, 1, False, payload[h:]), encrypt_chunk(s.fk, 2, True, b"")]
    # payload_len pins the chunk count, so the reader looks for the trailer where the appended
    # chunk starts; the file length then disagrees with the trailer it describes.
    return bad(
        "extra_empty_final_chunk", s, "IntegrityError",
        "full chunk re-encrypted as non-final, empty final chunk appended: file length mismatch",
    )  # fmt: skip


@case
def truncated_mid_chunk() -> Case:
    s = small("truncated_mid_chunk")
    data = s.to_bytes()
    cut = len(s.authenticated()) + 32 + len(s.chunks[0]) // 2
    return bad("truncated_mid_chunk", data[:cut], "IntegrityError", "file ends in the middle of chunk 0")


@case
def truncated_chunk_boundary() -> Case:
    _, payload = blob_body("truncated_chunk_boundary", CS + 200)
    s = seal("truncated_chunk_boundary", payload)
    s.chunks = s.chunks[:2]
    s.trailer = b""
    return bad("truncated_chunk_boundary", s, "IntegrityError", "file ends right after chunk 1 of 3")


@case
def trailing_garbage() -> Case:
    s = small("trailing_garbage")
    s.trailer += b"\x00garbage"
    return bad("trailing_garbage", s, "IntegrityError", "bytes after the trailer")


# trailer and signatures


@case
def sig_count_without_signature() -> Case:
    s = small("sig_count_without_signature", signers=(SIGNER_1,))
    s.trailer = s.trailer[: 2 + 32 * len(s.chunks) + 4]  # the block length, not the block
    return bad(
        "sig_count_without_signature", s, "IntegrityError", "sig_count 1 and the chunk table, but no signature entry",
        trusted=(SIGNER_1,),
    )  # fmt: skip


@case
def signature_bytes_flipped() -> Case:
    s = small("signature_bytes_flipped", signers=(SIGNER_1,))
    s.trailer = flip(s.trailer, len(s.trailer) - 1)
    return bad(
        "signature_bytes_flipped", s, "SignatureError", "one bit of the Ed25519 signature flipped", trusted=(SIGNER_1,)
    )


@case
def signature_other_root() -> Case:
    s = small("signature_other_root", signers=(SIGNER_1,))
    table = s.table()
    other = content_root(s.content, len(s.chunks), flip(table, 0))
    s.trailer = trailer(table, [sig_entry(SIGNER_1, other)])
    return bad(
        "signature_other_root",
        s,
        "SignatureError",
        "valid signature by the trusted key over a different root",
        trusted=(SIGNER_1,),
    )


@case
def chunk_table_altered() -> Case:
    s = small("chunk_table_altered", signers=(SIGNER_1,))
    s.trailer = flip(s.trailer, 2)
    return bad(
        "chunk_table_altered",
        s,
        "SignatureError",
        "chunk digest table entry altered: the root no longer verifies",
        trusted=(SIGNER_1,),
    )


@case
def chunk_table_altered_resigned() -> Case:
    s = small("chunk_table_altered_resigned", signers=(SIGNER_1,))
    s.sign(SIGNER_1, table=flip(s.table(), 0))
    return bad(
        "chunk_table_altered_resigned", s, "IntegrityError",
        "trusted key signed a wrong chunk digest: the per-chunk digest check catches it", trusted=(SIGNER_1,),
    )  # fmt: skip


@case
def signature_wrong_pubkey() -> Case:
    s = small("signature_wrong_pubkey", signers=(SIGNER_1,))
    s.trailer = trailer(s.table(), [sig_entry(SIGNER_EVIL, s.root(), claim=SIGNER_1.public.to_bytes())])
    return bad(
        "signature_wrong_pubkey", s, "SignatureError", "entry names the trusted public key but another key signed it",
        trusted=(SIGNER_1,),
    )  # fmt: skip


@case
def duplicate_signer() -> Case:
    s = small("duplicate_signer", signers=(SIGNER_1,))
    s.sign(SIGNER_1, SIGNER_1)
    return bad("duplicate_signer", s, "FormatError", "two signature entries by the same key", trusted=(SIGNER_1,))


@case
def unsigned_with_policy() -> Case:
    s = small("unsigned_with_policy")
    return bad(
        "unsigned_with_policy", s, "SignatureError", "unsigned file loaded with trusted signers", trusted=(SIGNER_1,)
    )


@case
def untrusted_signer() -> Case:
    s = small("untrusted_signer", signers=(SIGNER_EVIL,))
    return bad(
        "untrusted_signer", s, "SignatureError", "validly signed, but only by an untrusted key", trusted=(SIGNER_1,)
    )


RELEASE_META = {"model": "llama-tiny", "version": "7"}


@case
def countersignature_only_trusted() -> Case:
    s = small("countersignature_only_trusted", signers=(SIGNER_EVIL,), metadata=RELEASE_META)
    root = s.root()
    s.trailer = trailer(s.table(), [sig_entry(SIGNER_EVIL, root, RELEASE_META),
                                    sig_entry(SIGNER_1, root, RELEASE_META, kind="counter-signature")])  # fmt: skip
    return bad(
        "countersignature_only_trusted", s, "SignatureError",
        "an untrusted key's release, counter-signed by the trusted key: no trusted release statement",
        trusted=(SIGNER_1,),
    )  # fmt: skip


@case
def statement_other_version() -> Case:
    s = small("statement_other_version", signers=(SIGNER_1,), metadata=RELEASE_META)
    s.sign(SIGNER_1, stmt=statement(s.root(), {"model": "llama-tiny", "version": "999"}))
    return bad(
        "statement_other_version", s, "SignatureError",
        "the trusted key's statement names version 999, the file's metadata says 7", trusted=(SIGNER_1,),
    )  # fmt: skip


@case
def statement_noncanonical() -> Case:
    s = small("statement_noncanonical", signers=(SIGNER_1,))
    body = json.dumps(json.loads(statement(s.root(), {})), sort_keys=True).encode()  # ", " and ": " separators
    s.sign(SIGNER_1, stmt=body)
    return bad("statement_noncanonical", s, "FormatError", "statement JSON not in canonical form", trusted=(SIGNER_1,))


@case
def statement_expired() -> Case:
    s = small("statement_expired", signers=(SIGNER_1,))
    s.sign(SIGNER_1, expires_at=NOW + 3600)
    return bad(
        "statement_expired", s, "SignatureError", "the trusted key's release statement expired (NOW + 1 h)",
        trusted=(SIGNER_1,),
    )  # fmt: skip


@case
def signature_unknown_alg() -> Case:
    s = small("signature_unknown_alg", signers=(SIGNER_1,))
    body = statement(s.root(), {})
    s.trailer = trailer(s.table(), [raw_entry(9, SIGNER_1.public.to_bytes(), body, SIGNER_1.sign(pae(body)))])
    return bad("signature_unknown_alg", s, "FormatError", "signature algorithm code 9", trusted=(SIGNER_1,))


#: Ed25519 encodings of the identity point: canonical (y = 1) and non-canonical (y = p + 1).
#: Under the identity key, the signature R = identity, S = 0 verifies for every message in
#: cofactorless verifiers (OpenSSL's included); readers must refuse such keys (FORMAT.md §8).
ED25519_IDENTITY = (1).to_bytes(32, "little")
ED25519_IDENTITY_NONCANONICAL = (2**255 - 19 + 1).to_bytes(32, "little")


def _small_order_signer(name: str, pub: bytes, why: str) -> Case:
    s = small(name, signers=(SIGNER_1,))
    s.trailer = trailer(s.table(), [raw_entry(1, pub, statement(s.root(), {}), ED25519_IDENTITY + bytes(32))])
    return bad(name, s, "SignatureError", why)


@case
def signer_small_order_identity() -> Case:
    return _small_order_signer(
        "signer_small_order_identity", ED25519_IDENTITY,
        "signer key is the identity point with signature (R = identity, S = 0), which verifies any "
        "message: refused as a small-order key, with no policy",
    )  # fmt: skip


@case
def signer_noncanonical_key() -> Case:
    return _small_order_signer(
        "signer_noncanonical_key", ED25519_IDENTITY_NONCANONICAL,
        "signer key is the identity point encoded non-canonically (y = p + 1): refused, with no policy",
    )  # fmt: skip


@case
def signed_chunk_reencrypted() -> Case:
    s = small("signed_chunk_reencrypted", signers=(SIGNER_1,))
    forged = bytearray(s.payload)
    forged[-1] ^= 0x40  # bias[2]: 2.0 -> 0.0, still a valid payload
    last, h = len(s.chunks) - 1, s.c.head_len
    s.chunks[last] = encrypt_chunk(s.fk, last, True, bytes(forged[h:]))  # same DEK, the publisher's trailer kept
    return bad(
        "signed_chunk_reencrypted", s, "IntegrityError",
        "a key holder re-encrypted a changed payload under the same DEK and kept the signed trailer: "
        "the chunk authenticates, but a signed file's digests are checked even with no policy",
    )  # fmt: skip


# payloads inside a correctly sealed container


def _payload_case(name: str, payload: bytes, why: str) -> Case:
    return bad(name, seal(name, payload), "FormatError", why)


@case
def payload_header_len_past_end() -> Case:
    p = handmade()
    p = u64(len(p) - 7) + p[8:]
    return _payload_case("payload_header_len_past_end", p, "safetensors header length runs past the payload")


@case
def payload_header_not_json() -> Case:
    return _payload_case(
        "payload_header_not_json", st_payload(b"{not json}", F32_DATA), "safetensors header is not JSON"
    )


@case
def payload_duplicate_json_key() -> Case:
    e = b'"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}'
    meta = json.dumps({"__metadata__": st_meta({"t": "dict", "v": [["w", tensor_ref("w", "F32", [4])]]})})
    raw = meta[:-1].encode() + b"," + e + b"," + e + b"}"
    return _payload_case(
        "payload_duplicate_json_key", st_payload(raw, F32_DATA), "entry name repeated in the JSON header"
    )


def _two_entries(name: str, a: list[int], b: list[int], data_len: int, why: str) -> Case:
    entries = {
        "a": {"dtype": "U8", "shape": [a[1] - a[0]], "data_offsets": a},
        "b": {"dtype": "U8", "shape": [b[1] - b[0]], "data_offsets": b},
    }
    structure = {
        "t": "dict",
        "v": [["a", tensor_ref("a", "U8", [a[1] - a[0]])], ["b", tensor_ref("b", "U8", [b[1] - b[0]])]],
    }
    return _payload_case(name, handmade(structure, entries, bytes(range(data_len))), why)


@case
def payload_offsets_overlap() -> Case:
    return _two_entries("payload_offsets_overlap", [0, 8], [4, 12], 12, "entries [0,8) and [4,12) overlap")


@case
def payload_offsets_gap() -> Case:
    return _two_entries("payload_offsets_gap", [0, 4], [8, 12], 12, "gap between entries [0,4) and [8,12)")


@case
def payload_offsets_not_zero() -> Case:
    entries = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [4, 20]}}
    return _payload_case(
        "payload_offsets_not_zero",
        handmade(entries=entries, data=bytes(4) + F32_DATA),
        "first entry starts at 4, not 0",
    )


@case
def payload_size_mismatch() -> Case:
    entries = {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}
    return _payload_case("payload_size_mismatch", handmade(entries=entries), "16 bytes for F32[3] (12 expected)")


@case
def payload_empty_shape_overflows() -> Case:
    shape = [1 << 40, 1 << 40, 0]  # zero bytes, but 2**80 elements before the zero: no runtime can build it
    entries = {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}
    structure = {"t": "dict", "v": [["w", tensor_ref("w", "F32", shape, [0, 0, 1])]]}
    return _payload_case(
        "payload_empty_shape_overflows",
        handmade(structure, entries, b""),
        "empty F32 entry whose non-zero dims multiply to 2**80 (limit 2**63)",
    )


@case
def payload_unknown_dtype() -> Case:
    entries = {"w": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}
    return _payload_case("payload_unknown_dtype", handmade(entries=entries), "unknown safetensors dtype C64")


@case
def payload_missing_structure() -> Case:
    entries = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    p = st_payload({"__metadata__": {"sealedckpt.version": "1"}, **entries}, F32_DATA)
    return _payload_case("payload_missing_structure", p, "__metadata__ lacks sealedckpt.structure")


@case
def payload_structure_missing_entry() -> Case:
    structure = {"t": "dict", "v": [["w", tensor_ref("nope", "F32", [4])]]}
    return _payload_case(
        "payload_structure_missing_entry", handmade(structure), "structure names entry 'nope' that is not there"
    )


@case
def payload_view_out_of_bounds() -> Case:
    structure = {"t": "dict", "v": [["w", tensor_ref("w", "F32", [4], [1], 1)]]}
    return _payload_case(
        "payload_view_out_of_bounds", handmade(structure), "F32[4] view at offset 1 of a 4-element storage"
    )


@case
def payload_noncanonical_base64() -> Case:
    structure = {"t": "dict", "v": [["b", {"t": "bytes", "v": "QR=="}], ["w", tensor_ref("w", "F32", [4])]]}
    return _payload_case(
        "payload_noncanonical_base64", handmade(structure), "bytes node 'QR==' (canonical form is 'QQ==')"
    )


def _node_case(name: str, node: dict[str, Any], why: str) -> Case:
    """A FormatError case: the handmade payload with ``node`` as the value of key ``x``."""
    structure = {"t": "dict", "v": [["x", node], ["w", tensor_ref("w", "F32", [4])]]}
    return _payload_case(name, handmade(structure), why)


@case
def payload_enum_unknown_member() -> Case:
    node = {"t": "enum", "module": "re", "qualname": "RegexFlag", "name": "NOPE"}
    return _node_case("payload_enum_unknown_member", node, "enum node naming a member re.RegexFlag does not have")


@case
def payload_enum_module_not_imported() -> Case:
    node = {"t": "enum", "module": "sealedckpt_vectors_no_such_module", "qualname": "E", "name": "A"}
    return _node_case(
        "payload_enum_module_not_imported",
        node,
        "enum node naming a module that is not imported (the reader never imports one)",
    )


@case
def payload_enum_not_enum_class() -> Case:
    node = {"t": "enum", "module": "argparse", "qualname": "Namespace", "name": "A"}
    return _node_case(
        "payload_enum_not_enum_class", node, "enum node naming argparse.Namespace, a class that is not an enum.Enum"
    )


@case
def payload_dataclass_unregistered() -> Case:
    node = {"t": "dataclass", "cls": "sealedckpt_vectors:Config", "v": [["lr", 0.1]]}
    return _node_case(
        "payload_dataclass_unregistered", node, "dataclass node naming a class not registered with register_dataclass"
    )


@case
def payload_timedelta_malformed() -> Case:
    node = {"t": "timedelta", "v": [0, 86400, 0]}
    return _node_case("payload_timedelta_malformed", node, "timedelta node with seconds = 86400 (not normalized)")


@case
def payload_complex_malformed() -> Case:
    node = {"t": "complex", "v": ["1", "0.0"]}
    return _node_case("payload_complex_malformed", node, "complex node whose real part '1' is not repr() of a float")


@case
def payload_decimal_malformed() -> Case:
    node = {"t": "decimal", "v": "1_000"}
    return _node_case("payload_decimal_malformed", node, "decimal node '1_000' (not canonical: str() gives '1000')")


@case
def payload_structure_too_deep() -> Case:
    raw = "[" * 1000 + "]" * 1000
    return _payload_case("payload_structure_too_deep", handmade(raw=raw), "structure nested 1000 lists deep")


@case
def payload_bool_byte_2() -> Case:
    entries = {"m": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}
    structure = {"t": "dict", "v": [["m", tensor_ref("m", "BOOL", [4])]]}
    return _payload_case(
        "payload_bool_byte_2", handmade(structure, entries, b"\x00\x01\x02\x01"), "bool tensor holds byte 2"
    )


@case
def payload_structure_depth_101() -> Case:
    raw = "[" * 150 + "]" * 150
    return _payload_case(
        "payload_structure_depth_101", handmade(raw=raw), "structure nested 150 lists deep (limit 100)"
    )


@case
def payload_ndarray_bool_byte_2() -> Case:
    entries = {"m": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}
    structure = {"t": "dict", "v": [["m", {"t": "ndarray", "e": "m", "dtype": "|b1", "shape": [4]}]]}
    c = _payload_case(
        "payload_ndarray_bool_byte_2",
        handmade(structure, entries, b"\x00\x01\x02\x01"),
        "numpy bool array holds byte 2 (the rule for bool tensors)",
    )
    return c


# X25519 recipient and scrypt passphrase slots (FORMAT.md §5)


@case
def valid_x25519_recipient() -> Case:
    s = small("valid_x25519_recipient", keys=(RECIPIENT_1,))
    return valid(
        "valid_x25519_recipient", s, "sealed to one X25519 recipient (ephemeral key from the DRBG)", small_obj(),
        keys=(RECIPIENT_1,),
    )  # fmt: skip


@case
def valid_two_recipients_and_key() -> Case:
    keys = (RECIPIENT_1, RECIPIENT_2, KEY_A)
    s = small("valid_two_recipients_and_key", keys=keys)
    return valid(
        "valid_two_recipients_and_key", s,
        "two X25519 recipient slots and a symmetric slot; each identity or key alone opens it", small_obj(),
        keys=keys,
    )  # fmt: skip


@case
def valid_passphrase_log2n_10() -> Case:
    s = small("valid_passphrase_log2n_10", keys=(PASS,))
    assert s.slots[0][1][0] == 10
    return valid(
        "valid_passphrase_log2n_10", s, "one scrypt passphrase slot, work factor 2**10 (r=8, p=1), cap 2**20",
        small_obj(), keys=(PASS,),
    )  # fmt: skip


@case
def x25519_slot_79() -> Case:
    s = small("x25519_slot_79", keys=(RECIPIENT_1,))
    t, body = s.slots[0]
    s.slots[0] = (t, body[:79])
    s.remac()
    return bad(
        "x25519_slot_79", s, "FormatError", "X25519 slot body of 79 bytes, must be 80 (header re-MACed)",
        keys=(RECIPIENT_1,),
    )  # fmt: skip


@case
def x25519_low_order_share() -> Case:
    s = small("x25519_low_order_share", keys=(RECIPIENT_1,))
    t, body = s.slots[0]
    s.slots[0] = (t, bytes(32) + body[32:])
    s.remac()
    return bad(
        "x25519_low_order_share", s, "FormatError",
        "share replaced by 32 zero bytes (a low-order point: X25519 gives the all-zero secret), "
        "opened with the right identity; header re-MACed",
        keys=(RECIPIENT_1,),
    )  # fmt: skip


@case
def x25519_wrong_identity() -> Case:
    s = small("x25519_wrong_identity", keys=(RECIPIENT_1,))
    return bad(
        "x25519_wrong_identity", s, "DecryptionError", "sealed to recipient 1, opened with another X25519 identity",
        keys=(RECIPIENT_WRONG,),
    )  # fmt: skip


@case
def x25519_wrapped_flipped() -> Case:
    s = small("x25519_wrapped_flipped", keys=(RECIPIENT_1,))
    t, body = s.slots[0]
    s.slots[0] = (t, flip(body, 32))
    return bad(
        "x25519_wrapped_flipped", s, "DecryptionError",
        "one bit of the wrapped DEK flipped: a recipient slot names no key, so a slot that does not "
        "open reads as a wrong identity (unlike a symmetric slot, whose key-id hint exposes the edit)",
        keys=(RECIPIENT_1,),
    )  # fmt: skip


@case
def x25519_slot_rewrapped_no_remac() -> Case:
    name = "x25519_slot_rewrapped_no_remac"
    s = small(name, keys=(RECIPIENT_1,))
    t, body = s.slots[0]
    fresh = x25519_wrap(RECIPIENT_1.public.to_bytes(), s.dek, s.c.salt, Drbg(name + "/eph")(32))
    assert fresh[:32] != body[:32] and x25519_unwrap(RECIPIENT_1, s.c.salt, fresh) == s.dek
    s.slots[0] = (t, fresh)
    return bad(
        name, s, "IntegrityError",
        "slot replaced by a fresh, valid X25519 wrap of the same DEK (new share) without recomputing "
        "the header MAC: the slot opens, the commitment matches, the MAC fails",
        keys=(RECIPIENT_1,),
    )  # fmt: skip


@case
def passphrase_with_symmetric_slot() -> Case:
    name = "passphrase_with_symmetric_slot"
    s = small(name)
    s.slots.append((SLOT_SCRYPT, scrypt_body(PASS.text, s.dek, s.c.salt, Drbg(name + "/psalt")(16), 10)))
    s.remac()
    return bad(
        name, s, "FormatError",
        "a valid passphrase slot after a valid symmetric slot (header re-MACed): a passphrase slot "
        "must be the only slot, even though the symmetric key given would open the file",
    )  # fmt: skip


def _passphrase_log2n(name: str, log2n: int, why: str, key: PassKey = PASS, **kw: Any) -> Case:
    """A log2n-10 passphrase file whose work-factor byte is then set to ``log2n`` (header re-MACed);
    the wrap stays the 2**10 one, which a correct reader never gets to try."""
    s = small(name, keys=(PASS,))
    t, body = s.slots[0]
    s.slots[0] = (t, bytes([log2n]) + body[1:])
    s.remac()
    return bad(name, s, "FormatError", why, keys=(key,), **kw)


@case
def passphrase_log2n_21() -> Case:
    return _passphrase_log2n(
        "passphrase_log2n_21", 21,
        "work factor 2**21 above the default cap 2**20: refused before running scrypt (fast); "
        "the wrap is a 2**10 one, the reader must not get that far",
        max_seconds=1.0,
    )  # fmt: skip


@case
def passphrase_log2n_0() -> Case:
    return _passphrase_log2n("passphrase_log2n_0", 0, "work factor byte 0, must be 1..30")


@case
def passphrase_log2n_31() -> Case:
    return _passphrase_log2n(
        "passphrase_log2n_31", 31, "work factor byte 31, must be 1..30 (opened with the highest cap, 2**30)",
        key=PassKey(PASS.text, max_log2n=30),
    )  # fmt: skip


@case
def passphrase_wrong() -> Case:
    s = small("passphrase_wrong", keys=(PASS,))
    return bad(
        "passphrase_wrong", s, "DecryptionError", "log2n-10 passphrase slot, wrong passphrase", keys=(PASS_WRONG,)
    )


def _passphrase_remaced(name: str, edit: Callable[[Sealed], None], why: str) -> Case:
    s = small(name, keys=(PASS,))
    edit(s)
    return bad(name, s, "DecryptionError", why, keys=(PASS,))


def _alter_commitment(s: Sealed) -> None:
    c = s.c
    c.commitment = flip(c.commitment, 0)
    s.set_content(c)
    s.remac()


@case
def passphrase_commitment_wrong() -> Case:
    return _passphrase_remaced(
        "passphrase_commitment_wrong", _alter_commitment,
        "right passphrase, key commitment altered and MAC recomputed: the same error as a wrong "
        "passphrase (no partition oracle)",
    )  # fmt: skip


@case
def passphrase_header_mac_flipped() -> Case:
    def edit(s: Sealed) -> None:
        s.mac = flip(s.mac, 0)

    return _passphrase_remaced(
        "passphrase_header_mac_flipped", edit,
        "right passphrase, header MAC flipped: the same error as a wrong passphrase",
    )  # fmt: skip


# --- post-quantum: ML-KEM-768 + X25519 slots (type 4), composite signatures (alg 2) --------------
#
# ML-KEM encapsulation and ML-DSA signing draw randomness inside ``cryptography`` (it takes no
# seed), so those two draws are frozen in kat/pq-frozen.json: an ML-KEM-768 ciphertext per case
# (made once by an honest encapsulation; the generator decapsulates it with the recipient's key to
# get ss_M) and an ML-DSA-65 signature per signed message representative (checked before use).
# A missing entry is made fresh and recorded; with the file committed, output is byte-identical.

PQ_FROZEN = HERE / "kat" / "pq-frozen.json"
SLOT_PQ = 4
PQ_AAD = b"sealedckpt/v1 mlkem768x25519 slot\x00"
INFO_PQ = b"sealedckpt/v1 mlkem768x25519 wrap key"
XWING_LABEL = b"\\.//^\\"
COMPOSITE_EXPAND = b"sealedckpt/v1 composite seed ed25519+mldsa65\x00"
COMPOSITE_PREFIX = b"CompositeAlgorithmSignatures2025"
COMPOSITE_LABEL = b"sealedckpt/v1 ed25519+mldsa65"
PQ_RECIPIENT_1 = PQRecipientKey(_secret("xwing recipient 1"))
PQ_RECIPIENT_WRONG = PQRecipientKey(_secret("xwing recipient wrong"))
COMPOSITE_1 = CompositeSigningKey(_secret("composite signer 1"))


def _frozen() -> dict[str, dict[str, str]]:
    if PQ_FROZEN.exists():
        doc: dict[str, dict[str, str]] = json.loads(PQ_FROZEN.read_text(encoding="utf-8"))
        return doc
    return {"mlkem768_ct": {}, "mldsa65_sig": {}}


def _freeze(doc: dict[str, dict[str, str]]) -> None:
    PQ_FROZEN.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def xwing_keys(seed: bytes) -> tuple[MLKEM768PrivateKey, X25519PrivateKey, bytes]:
    """X-Wing expandDecapsulationKey (draft-connolly-cfrg-xwing-kem): SHAKE256(seed, 96)."""
    x = hashlib.shake_256(seed).digest(96)
    sk_m, sk_x = MLKEM768PrivateKey.from_seed_bytes(x[:64]), X25519PrivateKey.from_private_bytes(x[64:])
    return sk_m, sk_x, sk_m.public_key().public_bytes_raw() + sk_x.public_key().public_bytes_raw()


def pq_body(name: str, ident: PQRecipientKey, dek: bytes, salt: bytes) -> bytes:
    """A type-4 slot body ``ct_M || ct_X || wrapped`` with the frozen ct_M and a DRBG ephemeral."""
    sk_m, _, pk = xwing_keys(ident.to_bytes())
    doc = _frozen()
    if name not in doc["mlkem768_ct"]:
        doc["mlkem768_ct"][name] = MLKEM768PublicKey.from_public_bytes(pk[:1184]).encapsulate()[1].hex()
        _freeze(doc)
    ct_m = bytes.fromhex(doc["mlkem768_ct"][name])
    eph = X25519PrivateKey.from_private_bytes(Drbg(name + "/xwing")(32))
    ct_x, pk_x = eph.public_key().public_bytes_raw(), pk[1184:]
    ss_x = eph.exchange(X25519PublicKey.from_public_bytes(pk_x))
    ss = hashlib.sha3_256(sk_m.decapsulate(ct_m) + ss_x + ct_x + pk_x + XWING_LABEL).digest()
    ct = ct_m + ct_x
    wk = HKDF(algorithm=hashes.SHA256(), length=32, salt=ct + pk, info=INFO_PQ).derive(ss)
    return ct + AESGCM(wk).encrypt(ZERO_NONCE, dek, PQ_AAD + salt)


def composite_halves(key: CompositeSigningKey) -> tuple[SigningKey, MLDSA65PrivateKey]:
    x = hashlib.shake_256(COMPOSITE_EXPAND + key.to_bytes()).digest(64)
    return SigningKey(x[:32]), MLDSA65PrivateKey.from_seed_bytes(x[32:])


def composite_sign(key: CompositeSigningKey, message: bytes) -> bytes:
    """ed25519(M') || ML-DSA-65(M', ctx = label), M' = prefix || label || 0x00 || SHA-512(M)."""
    ed, ml = composite_halves(key)
    rep = COMPOSITE_PREFIX + COMPOSITE_LABEL + b"\x00" + hashlib.sha512(message).digest()
    doc, digest = _frozen(), sha256(rep).hex()
    if digest not in doc["mldsa65_sig"]:
        doc["mldsa65_sig"][digest] = ml.sign(rep, COMPOSITE_LABEL).hex()
        _freeze(doc)
    sig = bytes.fromhex(doc["mldsa65_sig"][digest])
    ml.public_key().verify(sig, rep, COMPOSITE_LABEL)
    return ed.sign(rep) + sig


def composite_entry(key: CompositeSigningKey, root: bytes) -> bytes:
    """An alg-2 trailer entry: both halves sign PAE(statement), as every algorithm does (§8.1, §8.2)."""
    body = statement(root, {})
    return raw_entry(2, key.public.to_bytes(), body, composite_sign(key, pae(body)))


def pq_sealed(name: str, ident: PQRecipientKey = PQ_RECIPIENT_1) -> Sealed:
    """A small file sealed with KEY_A by the library, its slot replaced by a type-4 slot."""
    s = small(name)
    s.slots = [(SLOT_PQ, pq_body(name, ident, s.dek, s.c.salt))]
    s.remac()
    return s


def composite_signed(name: str, *entries: Callable[[bytes], bytes]) -> Sealed:
    s = small(name)
    table = s.table()
    root = content_root(s.content, len(s.chunks), table)
    s.trailer = trailer(table, [e(root) for e in entries])
    return s


@case
def valid_pq_recipient() -> Case:
    s = pq_sealed("valid_pq_recipient")
    return valid(
        "valid_pq_recipient", s, "one ML-KEM-768 + X25519 (X-Wing) recipient slot", small_obj(),
        keys=(PQ_RECIPIENT_1,),
    )  # fmt: skip


@case
def pq_wrong_identity() -> Case:
    s = pq_sealed("pq_wrong_identity")
    return bad(
        "pq_wrong_identity", s, "DecryptionError", "sealed to PQ recipient 1, opened with another PQ identity",
        keys=(PQ_RECIPIENT_WRONG,),
    )  # fmt: skip


@case
def pq_classical_identity() -> Case:
    s = pq_sealed("pq_classical_identity")
    return bad(
        "pq_classical_identity", s, "DecryptionError", "PQ slot only, opened with a classical X25519 identity",
        keys=(RECIPIENT_1,),
    )  # fmt: skip


@case
def pq_wrapped_flipped() -> Case:
    s = pq_sealed("pq_wrapped_flipped")
    t, body = s.slots[0]
    s.slots[0] = (t, flip(body, 1120))
    s.remac()
    return bad(
        "pq_wrapped_flipped", s, "DecryptionError", "one bit of the wrapped DEK flipped; header re-MACed",
        keys=(PQ_RECIPIENT_1,),
    )  # fmt: skip


@case
def pq_mlkem_ciphertext_flipped() -> Case:
    s = pq_sealed("pq_mlkem_ciphertext_flipped")
    t, body = s.slots[0]
    s.slots[0] = (t, flip(body, 0))
    s.remac()
    return bad(
        "pq_mlkem_ciphertext_flipped", s, "DecryptionError",
        "one bit of the ML-KEM ciphertext flipped: implicit rejection gives another secret, the wrap fails",
        keys=(PQ_RECIPIENT_1,),
    )  # fmt: skip


@case
def pq_low_order_share() -> Case:
    s = pq_sealed("pq_low_order_share")
    t, body = s.slots[0]
    s.slots[0] = (t, body[:1088] + bytes(32) + body[1120:])
    s.remac()
    return bad(
        "pq_low_order_share", s, "FormatError", "X25519 share of the X-Wing ciphertext zeroed (low order)",
        keys=(PQ_RECIPIENT_1,),
    )  # fmt: skip


@case
def pq_slot_1167() -> Case:
    s = pq_sealed("pq_slot_1167")
    t, body = s.slots[0]
    s.slots[0] = (t, body[:-1])
    s.remac()
    return bad("pq_slot_1167", s, "FormatError", "type-4 slot body one byte short (1167)", keys=(PQ_RECIPIENT_1,))


@case
def valid_composite_signed() -> Case:
    s = composite_signed("valid_composite_signed", lambda r: composite_entry(COMPOSITE_1, r))
    return valid(
        "valid_composite_signed", s, "one Ed25519 + ML-DSA-65 composite signature (alg 2), trusted", small_obj(),
        trusted=(COMPOSITE_1,), signers=((COMPOSITE_1, True),),
    )  # fmt: skip


@case
def composite_ed25519_half_flipped() -> Case:
    s = composite_signed("composite_ed25519_half_flipped", lambda r: composite_entry(COMPOSITE_1, r))
    s.trailer = flip(s.trailer, len(s.trailer) - 3309 - 1)
    return bad(
        "composite_ed25519_half_flipped", s, "SignatureError", "last bit of the Ed25519 half flipped",
        trusted=(COMPOSITE_1,),
    )  # fmt: skip


@case
def composite_mldsa_half_flipped() -> Case:
    s = composite_signed("composite_mldsa_half_flipped", lambda r: composite_entry(COMPOSITE_1, r))
    s.trailer = flip(s.trailer, len(s.trailer) - 100)
    return bad(
        "composite_mldsa_half_flipped", s, "SignatureError", "one bit of the ML-DSA-65 half flipped",
        trusted=(COMPOSITE_1,),
    )  # fmt: skip


@case
def composite_classical_half_only() -> Case:
    ed, _ = composite_halves(COMPOSITE_1)
    s = composite_signed("composite_classical_half_only", lambda r: sig_entry(ed, r))
    return bad(
        "composite_classical_half_only", s, "SignatureError",
        "a valid classical Ed25519 signature by the composite key's own Ed25519 half, loaded trusting the "
        "composite key: not a signature by that key",
        trusted=(COMPOSITE_1,),
    )  # fmt: skip


# --- writing -------------------------------------------------------------------------------

#: Cases where the library does not (yet) behave as the format says: name -> reason.
XFAIL: dict[str, str] = {}


def key_entry(k: Key) -> dict[str, Any]:
    if isinstance(k, SymmetricKey):
        return {"kind": "symmetric", "key": k.to_bytes().hex()}
    if isinstance(k, PQRecipientKey):
        return {"kind": "pq-recipient", "secret": k.to_bytes().hex(), "public": k.public.to_bytes().hex()}
    if isinstance(k, RecipientKey):
        return {"kind": "recipient", "secret": k.to_bytes().hex(), "public": k.public.to_bytes().hex()}
    return {"kind": "passphrase", "passphrase": k.text, "max_log2n": k.max_log2n}


def key_entries(keys: Sequence[Key]) -> list[Any]:
    """Symmetric-only key lists keep their original form, hex strings; any other list is kinded."""
    if all(isinstance(k, SymmetricKey) for k in keys):
        return [k.to_bytes().hex() for k in keys]  # type: ignore[union-attr]
    return [key_entry(k) for k in keys]


def manifest_entry(c: Case) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": c.name,
        "file": c.name + ".sealed",
        "sha256": hashlib.sha256(c.data).hexdigest(),
        "size": len(c.data),
        "keys": key_entries(c.keys),
        "trusted_signers": None if c.trusted is None else [s.public.to_bytes().hex() for s in c.trusted],
        "why": c.why,
    }
    if c.error is None:
        entry["expect"] = {
            "ok": True,
            "payload_len": len(c.payload),
            "payload_sha256": hashlib.sha256(c.payload).hexdigest(),
            "metadata": c.metadata,
            "signers": [
                {"public_key": s.public.to_bytes().hex(), "signed_at": NOW, "trusted": t} for s, t in c.signers
            ],
            "value": describe(c.value),
        }
    else:
        entry["expect"] = {"error": c.error}
        if c.max_seconds is not None:
            entry["expect"]["max_seconds"] = c.max_seconds
    reason = c.xfail or XFAIL.get(c.name)
    if reason:
        entry["xfail"] = reason
    return entry


def build_cases() -> list[Case]:
    cases = [fn() for fn in CASES]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "duplicate case name"
    return cases


def generate(out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = build_cases()
    for c in cases:
        (out_dir / (c.name + ".sealed")).write_bytes(c.data)
    manifest = {
        "description": "sealedckpt container v1 test vectors; generated by generate.py. Keys are test-only.",
        "format_version": 1,
        "cases": [manifest_entry(c) for c in cases],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", type=Path, default=HERE)
    args = ap.parse_args(argv)
    m = generate(args.out_dir)
    total = sum(c["size"] for c in m["cases"])
    print(f"wrote {len(m['cases'])} cases ({total} bytes) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
