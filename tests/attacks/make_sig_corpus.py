"""Deterministic-shape generator for the signature and key-slot attack corpus.

Each case is a sealed file built with the library and then attacked the way a holder of one
key slot (a co-recipient), a passphrase-partition attacker, or a trailer forger can, plus the
exact error class every entry point must raise. Keys are fresh per run; the attacks use only
what the attacker holds (the slot key, hence the DEK) and public bytes.

Usage::

    python tests/attacks/make_sig_corpus.py OUT_DIR
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import sealedckpt
from sealedckpt import Passphrase, SigningKey, SymmetricKey, container, crypto
from sealedckpt.container.reader import unlock
from sealedckpt.container.stream import Source
from sealedckpt.payload.codec import plan_payload

__all__ = ["ED25519_IDENTITY", "Case", "Forger", "make_sig_corpus", "sealed_bytes", "state"]

CHUNK_LOG2 = 16
TAG = 16
P25519 = 2**255 - 19
#: The identity point, canonical (y = 1): with signature R = identity, S = 0 it "signs" anything.
ED25519_IDENTITY = (1).to_bytes(32, "little")
PASS_LOG2N = 10


@dataclass
class Case:
    name: str
    data: bytes
    error: type[sealedckpt.SealedCkptError]
    why: str
    keys: list[Any] = field(default_factory=list)
    trusted: list[sealedckpt.VerifyKey] | None = None


def state() -> dict[str, torch.Tensor]:
    """Three 80 KB tensors: with 64 KiB chunks, tensor ``c`` ends in the last of several chunks."""
    return {
        "a": torch.zeros(20_000),
        "b": torch.ones(20_000),
        "c": torch.arange(20_000, dtype=torch.float32),
    }


def sealed_bytes(obj: Any, keys: list[Any], signers: Sequence[SigningKey] = ()) -> bytes:
    plan = plan_payload(obj)
    out = io.BytesIO()
    container.seal(out, plan.payload_len, plan.segments(), keys=keys, signers=list(signers), chunk_log2=CHUNK_LOG2)
    return out.getvalue()


class Forger:
    """What a key-slot holder can do: recover the DEK, re-encrypt chunks, re-MAC the header."""

    def __init__(self, data: bytes, key: Any) -> None:
        self.data = bytearray(data)
        self.header, self.dek = unlock(Source(io.BytesIO(data)), [key])
        self.fk = crypto.derive_file_keys(self.dek, self.header.content.salt)
        self.content = self.header.content

    def chunk_offset(self, i: int) -> int:
        return self.header.size + self.content.chunk_offset(i)

    def plaintext(self, i: int) -> bytes:
        c = self.content
        n, plen = c.n_chunks, c.plain_len(i)
        off = self.chunk_offset(i)
        out = bytearray(plen)
        assert crypto.ChunkCipher(self.fk.payload_key).decrypt_into(
            i, i == n - 1, bytes(self.data[off : off + plen + TAG]), memoryview(out)
        )
        return bytes(out)

    def reencrypt(self, i: int, plain: bytes, final: bool | None = None) -> None:
        """Replace chunk ``i`` by ``plain`` under the same key (same length), keeping the trailer."""
        n = self.content.n_chunks
        final = i == n - 1 if final is None else final
        ct = bytearray(len(plain) + TAG)
        crypto.ChunkCipher(self.fk.payload_key).encrypt_into(i, final, plain, memoryview(ct))
        off = self.chunk_offset(i)
        assert len(ct) == self.content.plain_len(i) + TAG
        self.data[off : off + len(ct)] = ct

    def remac(self, content_edit: Callable[[bytearray], None]) -> None:
        """Edit the content header in place and recompute the header MAC."""
        auth = bytearray(self.header.authenticated)
        content = auth[16 : 16 + len(self.header.content_bytes)]
        content_edit(content)
        auth[16 : 16 + len(content)] = content
        mac = crypto.header_mac(self.fk.header_mac_key, bytes(auth))
        self.data[: len(auth)] = auth
        self.data[len(auth) : len(auth) + 32] = mac

    def bytes(self) -> bytes:
        return bytes(self.data)


def _forged_last_chunk(key: SymmetricKey, publisher: SigningKey) -> bytes:
    f = Forger(sealed_bytes(state(), [key], [publisher]), key)
    last = f.content.n_chunks - 1
    plain = bytearray(f.plaintext(last))
    plain[-1] ^= 0x40  # one weight of ``c`` changed; the payload stays valid
    f.reencrypt(last, bytes(plain))
    return f.bytes()


def _identity_trailer(key: SymmetricKey, publisher: SigningKey) -> bytes:
    data = bytearray(sealed_bytes({"x": torch.ones(3)}, [key], [publisher]))
    stmt = bytes(data).rfind(b'{"_type"')  # the one entry: alg, pk_len, pk, st_len, statement, sig_len, sig
    data[stmt - 34 : stmt - 2] = ED25519_IDENTITY
    data[len(data) - 64 :] = ED25519_IDENTITY + bytes(32)  # R = identity, S = 0
    return bytes(data)


def _flip_commitment(content: bytearray) -> None:
    content[44] ^= 1  # first byte of the key commitment (docs/FORMAT.md §3)


def make_sig_corpus() -> list[Case]:
    """Every case, with the error class each entry point must raise."""
    key, publisher = SymmetricKey.generate(), SigningKey.generate()
    pw = Passphrase("correct horse", log2n=PASS_LOG2N)
    forged = _forged_last_chunk(key, publisher)
    pass_file = Forger(sealed_bytes({"x": torch.ones(3)}, [pw]), pw)
    pass_file.remac(_flip_commitment)
    return [
        Case("coreceipient_reencrypted_no_policy", forged, sealedckpt.IntegrityError,
             "a slot holder re-encrypted a chunk under the DEK and kept the publisher's trailer", [key]),
        Case("coreceipient_reencrypted_policy", forged, sealedckpt.IntegrityError,
             "the same, loaded with the publisher as trusted signer", [key], [publisher.public]),
        Case("identity_signer_no_policy", _identity_trailer(key, publisher), sealedckpt.SignatureError,
             "trailer entry by the identity point with (R = identity, S = 0): verifies any message", [key]),
        Case("passphrase_commitment_partition", pass_file.bytes(), sealedckpt.DecryptionError,
             "the passphrase opens the slot but the commitment fails: same error as a wrong one", [pw]),
        Case("passphrase_wrong", sealed_bytes({"x": torch.ones(3)}, [pw]), sealedckpt.DecryptionError,
             "a wrong passphrase", [Passphrase("wrong horse")]),
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path("sig_corpus")
    out.mkdir(parents=True, exist_ok=True)
    for c in make_sig_corpus():
        (out / f"{c.name}.sealed").write_bytes(c.data)
        print(f"{c.name}: {c.error.__name__}: {c.why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
