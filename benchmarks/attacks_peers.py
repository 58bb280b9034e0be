"""The same attacks against sealedckpt, CryptoTensors and OpenSSF model signing; a markdown table.

    .venv/bin/python benchmarks/attacks_peers.py                 # every tool whose package imports
    .venv/bin/python benchmarks/attacks_peers.py --tools sealedckpt --json out.json

Every cell is measured: the script writes a small checkpoint (three 1024x1024 fp32 tensors and
a 1024-element one, public metadata ``note=release-A``) with each tool, applies the attack to a fresh
copy, and runs each reader configuration on it. A reader that raises is "refused" (with the
exception); one that returns is "accepted", and a load's tensors are compared with the originals
("accepted, ALTERED" when they differ). Nothing is hard-coded but the attacks themselves; how
each attack is applied to each tool is in ``LEGEND`` and printed under the table.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers_lib as pl

NOTE, NOTE_EDIT = b"release-A", b"release-B"
A, B = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
NAMES = [A, B, "model.layers.0.mlp.up_proj.weight", "model.norm.weight"]
ATTACKS = ["truncation", "chunk swap", "header edit", "signature strip", "downgrade", "plain substitute", "forgery"]
TITLES = {
    "truncation": "truncation (file cut to 60%)",
    "chunk swap": "chunk swap (or the closest analogue)",
    "header edit": "header edit (public metadata value)",
    "signature strip": "signature strip",
    "downgrade": "signature and encryption metadata stripped (downgrade)",
    "plain substitute": "a plain safetensors file substituted",
    "forgery": "a key holder's forgery under a signer policy",
}
LEGEND = {
    "sealedckpt": {
        "chunk swap": "chunks 1 and 2 (4 MiB + tag each) exchanged",
        "signature strip": "trailer rewritten with no signatures (sig_count = 0), the file otherwise intact",
        "downgrade": "n.a.: the format has no unencrypted or unsigned-header mode to fall back to",
        "plain substitute": "a plain safetensors file with the same tensor names written at the path",
        "forgery": "the key holder decrypts chunk 1, changes 4 floats, re-encrypts it under the file's own "
        "payload key and nonce (valid GCM tag); header, key slots and the publisher's trailer kept",
    },
    "CryptoTensors": {
        "chunk swap": "the two 2 MiB GCM chunks of one tensor exchanged",
        "signature strip": "`__signature__` removed from the header (header re-serialized)",
        "downgrade": "every `__crypto_keys__`/`__encryption__`/`__signature__`/`__policy__` entry removed",
        "plain substitute": "a plain safetensors file with the same tensor names written at the path",
        "forgery": "the key holder unwraps the tensor's DEK with the master key, changes 4 floats and "
        "fixes another 16-byte block so that GHASH, hence the signed GCM tag, is unchanged",
    },
    "model-signing": {
        "chunk swap": "the data of two same-size tensors exchanged in the safetensors file",
        "signature strip": "the signature file deleted",
        "downgrade": "n.a.: nothing is encrypted",
        "plain substitute": "model.safetensors replaced by another plain file with the same names",
        "forgery": "n.a.: there is no decryption key, so no key holder (any writer is covered by the rows above)",
    },
}


@dataclass
class Outcome:
    status: str  # refused | accepted | accepted, ALTERED | n.a. | harness error
    error: str = ""  # the exception's class name
    module: str = ""  # the module that defines it
    detail: str = ""

    def cell(self) -> str:
        text = f"**{self.status}**" if self.status.startswith("accepted") else self.status
        if self.error:
            text += f" `{self.error}`"
        if self.detail:
            text += ": " + self.detail.replace("|", "\\|").replace("\n", " ")[:110]
        return text


def refused(exc: BaseException) -> Outcome:
    return Outcome("refused", type(exc).__name__, type(exc).__module__, str(exc).split("\n")[0])


def compare(got: dict[str, torch.Tensor], want: pl.StateDict) -> Outcome:
    same = set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    return Outcome(
        "accepted" if same else "accepted, ALTERED", detail="" if same else "content differs from what was signed"
    )


def state() -> pl.StateDict:
    g = torch.Generator().manual_seed(7)
    sd = {n: torch.randn(1024, 1024, generator=g) for n in NAMES[:3]}
    sd[NAMES[3]] = torch.randn(1024, generator=g)
    return sd


def header_json(data: bytes) -> tuple[dict[str, Any], int]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), 8 + n


def with_header(data: bytes, header: dict[str, Any]) -> bytes:
    _, base = header_json(data)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + data[base:]


def swap(data: bytearray, a: int, b: int, n: int) -> None:
    data[a : a + n], data[b : b + n] = data[b : b + n], data[a : a + n]


def replace_once(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    if data.count(old) != 1:
        raise RuntimeError(f"expected {old!r} once in {path.name}, found it {data.count(old)} times")
    path.write_bytes(data.replace(old, new))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, os.SEEK_END) * 6 // 10)


def plain_substitute(path: Path, sd: pl.StateDict) -> None:
    path.unlink()
    safetensors.torch.save_file({k: torch.zeros_like(v) for k, v in sd.items()}, str(path))


def keyless_view(data: bytes, sd: pl.StateDict) -> str:
    """What anyone reading the file's bytes without a key learns: names, metadata, tensor values."""
    names = sum(k.encode() in data for k in sd)
    values = sum(t.reshape(-1)[:16].numpy().tobytes() in data for t in sd.values())
    shapes = b'"shape":[1024,1024]' in data.replace(b" ", b"")
    meta = NOTE in data
    return (f"tensor names {names}/{len(sd)}, shapes {'visible' if shapes else 'not found'}, metadata "
            f"{'visible' if meta else 'not found'}, tensor values {values}/{len(sd)}")  # fmt: skip


# --------------------------------------------------------------------------- GCM, for the forgery


def _gf_mul(x: int, y: int) -> int:
    """Multiplication in GF(2^128) with GCM's bit order (NIST SP 800-38D, algorithm 1)."""
    z, v = 0, x
    for i in range(127, -1, -1):
        if (y >> i) & 1:
            z ^= v
        v = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
    return z


def tag_preserving_edit(ct: bytearray, start: int, key: bytes, new_plain: bytes, old_plain: bytes) -> None:
    """Change the 16-byte block at ``start`` of one GCM message (ciphertext ``ct``, no AAD change) so
    that it decrypts to ``new_plain``, and fix the next block so that the tag stays valid: GHASH
    is linear, so block deltas d0, d1 with d1 = d0 * H cancel (a key holder knows H = AES_K(0))."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    h = int.from_bytes(enc.update(bytes(16)) + enc.finalize(), "big")
    d0 = int.from_bytes(bytes(a ^ b for a, b in zip(old_plain, new_plain, strict=True)), "big")
    for off, delta in ((start, d0), (start + 16, _gf_mul(d0, h))):
        ct[off : off + 16] = (int.from_bytes(ct[off : off + 16], "big") ^ delta).to_bytes(16, "big")


# --------------------------------------------------------------------------- the tools


class Sealed:
    name = "sealedckpt"

    def __init__(self, keys: pl.Keys, sd: pl.StateDict, work: Path) -> None:
        import sealedckpt

        self.sealedckpt, self.keys, self.sd = sealedckpt, keys, sd
        self.pristine = work / "pristine.sealed"
        sealedckpt.save(sd, self.pristine, key=keys.sealed_key, sign_with=keys.signer, metadata={"note": NOTE.decode()})
        self.checks: dict[str, Callable[[Path], Outcome]] = {
            "sealedckpt load (key + trusted_signers)": lambda p: self._load(p, True),
            "sealedckpt load (key, no signer policy)": lambda p: self._load(p, False),
            "sealedckpt verify (keyless, trusted_signers)": self._verify,
        }

    def _load(self, p: Path, trusted: bool) -> Outcome:
        try:
            got = pl.sealed_load(self.keys, p, trusted=trusted)
        except Exception as exc:
            return refused(exc)
        return compare(got, self.sd)

    def _verify(self, p: Path) -> Outcome:
        try:
            pl.sealed_verify(self.keys, p)
        except Exception as exc:
            return refused(exc)
        return Outcome("accepted")

    def make(self, d: Path) -> Path:
        return Path(shutil.copy(self.pristine, d / "model.sealed"))

    def _reader(self, p: Path) -> Any:
        with open(p, "rb") as f:
            return self.sealedckpt.container.open_sealed(io.BytesIO(f.read()), [self.keys.sealed_key])

    def _spans(self, p: Path) -> list[tuple[int, int]]:
        """(offset, length incl. tag) of every chunk, from the reader's authenticated layout."""
        stream = self._reader(p)._stream
        c, off, out = stream.content, stream._offset, []
        for i in range(c.n_chunks):
            n = c.plain_len(i) + 16
            out.append((off, n))
            off += n
        return out

    def attack(self, what: str, p: Path) -> str | None:
        if what == "truncation":
            truncate(p)
        elif what == "chunk swap":
            (a, n), (b, m) = self._spans(p)[1:3]
            data = bytearray(p.read_bytes())
            swap(data, a, b, min(n, m))
            p.write_bytes(data)
        elif what == "header edit":
            replace_once(p, NOTE, NOTE_EDIT)
        elif what == "signature strip":
            off, n = self._spans(p)[-1]  # the trailer starts right after the last chunk
            p.write_bytes(p.read_bytes()[: off + n] + b"\x00\x00")
        elif what == "downgrade":
            return LEGEND[self.name]["downgrade"]
        elif what == "plain substitute":
            plain_substitute(p, self.sd)
        elif what == "forgery":
            self._forge(p)
        return None

    def _forge(self, p: Path) -> None:
        stream = self._reader(p)._stream
        off, n = self._spans(p)[1]
        data = bytearray(p.read_bytes())
        ct = memoryview(bytearray(data[off : off + n]))
        plain = bytearray(stream.decrypt(1, ct[:], memoryview(bytearray(n - 16))))
        plain[:16] = struct.pack("<4f", 1000.0, 1000.0, 1000.0, 1000.0)
        out = memoryview(bytearray(n))
        stream._cipher.encrypt_into(1, stream.content.n_chunks == 2, bytes(plain), out)
        # the forged chunk is a valid AES-GCM message at its position (only its digest can expose it)
        stream.decrypt(1, memoryview(bytearray(out)), memoryview(bytearray(n - 16)))
        data[off : off + n] = out
        p.write_bytes(data)

    def visible(self) -> str:
        return keyless_view(self.pristine.read_bytes(), self.sd)


class CryptoTensors:
    name = "CryptoTensors"

    def __init__(self, keys: pl.Keys, sd: pl.StateDict, work: Path) -> None:
        self.keys, self.sd = keys, sd
        self.pristine = work / "pristine.ct"
        pl.ct_save(keys, sd, self.pristine, metadata={"note": NOTE.decode()})
        self.checks: dict[str, Callable[[Path], Outcome]] = {
            "CryptoTensors safe_open (enc key + signer's public key)": self._load
        }

    def _load(self, p: Path) -> Outcome:
        try:
            got = pl.ct_load(self.keys, p)
        except Exception as exc:
            return refused(exc)
        return compare(got, self.sd)

    def make(self, d: Path) -> Path:
        return Path(shutil.copy(self.pristine, d / "model.cryptotensors"))

    def attack(self, what: str, p: Path) -> str | None:
        data = p.read_bytes()
        header, base = header_json(data)
        meta = header["__metadata__"]
        if what == "truncation":
            truncate(p)
        elif what == "chunk swap":
            chunk = json.loads(meta["__crypto_keys__"])["chunk_size"]
            buf = bytearray(data)
            start = base + header[A]["data_offsets"][0]
            swap(buf, start, start + chunk, chunk)
            p.write_bytes(buf)
        elif what == "header edit":
            replace_once(p, NOTE, NOTE_EDIT)
        elif what in ("signature strip", "downgrade"):
            drop = {"__signature__"} if what == "signature strip" else {k for k in meta if k.startswith("__")}
            header["__metadata__"] = {k: v for k, v in meta.items() if k not in drop}
            p.write_bytes(with_header(data, header))
        elif what == "plain substitute":
            plain_substitute(p, self.sd)
        elif what == "forgery":
            self._forge(p, data, header, base)
        return None

    def _forge(self, p: Path, data: bytes, header: dict[str, Any], base: int) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        e = json.loads(header["__metadata__"]["__encryption__"])[A]
        master = base64.b64decode(self.keys.ct_enc["k"])
        wrapped = base64.b64decode(e["wrapped_key"]) + base64.b64decode(e["key_tag"])
        dek = AESGCM(master).decrypt(base64.b64decode(e["key_iv"]), wrapped, None)
        buf = bytearray(data)
        start = base + header[A]["data_offsets"][0]
        old = self.sd[A].reshape(-1)[:4].numpy().tobytes()
        tag_preserving_edit(buf, start, dek, struct.pack("<4f", 1000.0, 1000.0, 1000.0, 1000.0), old)
        p.write_bytes(buf)

    def visible(self) -> str:
        return keyless_view(self.pristine.read_bytes(), self.sd)


class ModelSigning:
    name = "model-signing"

    def __init__(self, keys: pl.Keys, sd: pl.StateDict, work: Path) -> None:
        self.keys, self.sd = keys, sd
        self.pristine = work / "ms-pristine"
        self.pristine.mkdir()
        safetensors.torch.save_file(sd, str(self.pristine / "model.safetensors"), metadata={"note": NOTE.decode()})
        self.sig = work / "ms-pristine.sig"
        pl.ms_sign(keys, self.pristine, self.sig, "sha256")
        self.checks: dict[str, Callable[[Path], Outcome]] = {
            "model-signing verify (P-256 public key), then load": self._verify_load
        }

    def _verify_load(self, d: Path) -> Outcome:
        try:
            pl.ms_verify(self.keys, d / "model", d / "model.sig", "sha256")
            got = safetensors.torch.load_file(str(d / "model" / "model.safetensors"))
        except Exception as exc:
            return refused(exc)
        return compare(got, self.sd)

    def make(self, d: Path) -> Path:
        shutil.copytree(self.pristine, d / "model")
        shutil.copy(self.sig, d / "model.sig")
        return d

    def attack(self, what: str, d: Path) -> str | None:
        f = d / "model" / "model.safetensors"
        if what == "truncation":
            truncate(f)
        elif what == "chunk swap":
            data = bytearray(f.read_bytes())
            header, base = header_json(bytes(data))
            (a0, a1), (b0, _) = header[A]["data_offsets"], header[B]["data_offsets"]
            swap(data, base + a0, base + b0, a1 - a0)
            f.write_bytes(data)
        elif what == "header edit":
            replace_once(f, NOTE, NOTE_EDIT)
        elif what == "signature strip":
            (d / "model.sig").unlink()
        elif what in ("downgrade", "forgery"):
            return LEGEND[self.name][what]
        elif what == "plain substitute":
            plain_substitute(f, self.sd)
        return None

    def visible(self) -> str:
        return keyless_view((self.pristine / "model.safetensors").read_bytes(), self.sd)


TOOLS: dict[str, type[Sealed | CryptoTensors | ModelSigning]] = {
    "sealedckpt": Sealed, "CryptoTensors": CryptoTensors, "model-signing": ModelSigning}  # fmt: skip
NEEDS = {"CryptoTensors": "cryptotensors", "model-signing": "model_signing"}


def run(tools: list[str], work: Path) -> dict[str, dict[str, Outcome]]:
    """{attack: {check column: outcome}}; the keyless view under the key "keyless"."""
    keys = pl.Keys.generate(work)
    sd = state()
    made = [TOOLS[t](keys, sd, work) for t in tools]
    table: dict[str, dict[str, Outcome]] = {}
    for what in ATTACKS:
        row = table.setdefault(what, {})
        for i, tool in enumerate(made):
            case = work / f"{what.replace(' ', '-')}-{i}"
            case.mkdir()
            try:
                target = tool.make(case)
                na = tool.attack(what, target)
            except Exception as exc:
                na = None
                for col in tool.checks:
                    row[col] = Outcome("harness error", type(exc).__name__, type(exc).__module__, str(exc))
                continue
            for col, check in tool.checks.items():
                row[col] = Outcome("n.a.", detail=na.removeprefix("n.a.: ")) if na else check(target)
    table["keyless"] = {col: Outcome("visible", detail=t.visible()) for t in made for col in t.checks}
    return table


def markdown(table: dict[str, dict[str, Outcome]], tools: list[str]) -> str:
    cols = list(table["keyless"])
    lines = ["| attack | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for what in ATTACKS:
        lines.append(f"| {TITLES[what]} | " + " | ".join(table[what][c].cell() for c in cols) + " |")
    lines.append("| what a keyless reader sees | " + " | ".join(table["keyless"][c].detail for c in cols) + " |")
    lines.append("")
    for t in tools:
        for what, how in LEGEND[t].items():
            lines.append(f"- {t}, {TITLES[what]}: {how}")
    return "\n".join(lines)


def available(requested: list[str]) -> list[str]:
    import importlib.util

    out = []
    for t in requested:
        if t in NEEDS and importlib.util.find_spec(NEEDS[t]) is None:
            print(f"{t}: skipped ({NEEDS[t]} is not installed; pip install -e '.[bench]')", file=sys.stderr)
            continue
        out.append(t)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: " + ", ".join(TOOLS))
    ap.add_argument("--json", help="write every outcome here")
    args = ap.parse_args(argv)
    tools = available([t for t in args.tools.split(",") if t])
    with tempfile.TemporaryDirectory(prefix="attacks-") as tmp:
        table = run(tools, Path(tmp))
    print(markdown(table, tools))
    if args.json:
        doc = {w: {c: asdict(o) for c, o in row.items()} for w, row in table.items()}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
