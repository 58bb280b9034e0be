"""Shared parts of bench_peers.py and attacks_peers.py: keys, data, and each tool's operations.

The peers are optional (the ``bench`` extra): ``cryptotensors`` and ``model_signing`` are imported
only inside the functions that use them. Keys are random per run (test keys, never real ones) and
reach child processes through a 0600 JSON file.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from bench_save_load import write_secret

import sealedckpt
from sealedckpt.crypto import textkeys

StateDict = dict[str, torch.Tensor]
LAZY_BYTES = 4 << 20  # the lazy read takes the tensor closest to 4 MiB
SHARDS = 4  # an HF-style directory holds this many safetensors shards


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@dataclass
class Keys:
    """One run's keys for every tool (all random, generated per run)."""

    sealed_key: sealedckpt.SymmetricKey
    signer: sealedckpt.SigningKey
    ct_enc: dict[str, str]  # CryptoTensors JWK: AES-256-GCM master key
    ct_sign: dict[str, str]  # CryptoTensors JWK: Ed25519 key pair
    ec_private: Path  # model-signing: P-256 private key (PEM, 0600)
    ec_public: Path

    @property
    def pub(self) -> sealedckpt.VerifyKey:
        return self.signer.public

    @property
    def ct_verify(self) -> dict[str, str]:
        """The CryptoTensors signing JWK without its private half: what a reader is given."""
        return {k: v for k, v in self.ct_sign.items() if k != "d"}

    def ct_read_config(self) -> dict[str, Any]:
        return {"enc_key": self.ct_enc, "sign_key": self.ct_verify}

    @classmethod
    def generate(cls, work: Path) -> Keys:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        ed = Ed25519PrivateKey.generate()
        d = ed.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
        x = ed.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        p256 = ec.generate_private_key(ec.SECP256R1())
        priv = write_secret(work / "ec-private.pem", p256.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))  # fmt: skip
        pub = work / "ec-public.pem"
        pub.write_bytes(p256.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
        return cls(
            sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate(),
            {"kty": "oct", "alg": "aes256gcm", "kid": "bench-enc", "k": _b64(os.urandom(32))},
            {"kty": "OKP", "crv": "Ed25519", "alg": "ed25519", "kid": "bench-sign", "d": _b64(d), "x": _b64(x)},
            priv, pub,
        )  # fmt: skip

    def dump(self, path: Path) -> Path:
        doc = {"sealed_key": textkeys.secret_to_text(self.sealed_key),
               "signer": base64.b64encode(self.signer.to_bytes()).decode(),
               "ct_enc": self.ct_enc, "ct_sign": self.ct_sign,
               "ec_private": str(self.ec_private), "ec_public": str(self.ec_public)}  # fmt: skip
        return write_secret(path, json.dumps(doc).encode())

    @classmethod
    def load(cls, path: Path) -> Keys:
        doc = json.loads(path.read_text())
        return cls(textkeys.secret_from_text(doc["sealed_key"]),  # type: ignore[arg-type]
                   sealedckpt.SigningKey.from_bytes(base64.b64decode(doc["signer"])),
                   doc["ct_enc"], doc["ct_sign"], Path(doc["ec_private"]), Path(doc["ec_public"]))  # fmt: skip


# --------------------------------------------------------------------------- data


def llm_state_dict(size_gb: float) -> StateDict:
    """bench_save_load's LLM-like fp32 set (same names, shapes and seed)."""
    from bench_save_load import build_llm

    return build_llm(size_gb, torch.float32)


def pick_lazy_tensor(sd: StateDict) -> str:
    from bench_save_load import pick_lazy_tensor as pick

    return pick(sd)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_hf_dir(sd: StateDict, d: Path, shards: int = SHARDS) -> None:
    """An HF-style model directory: ``shards`` safetensors shards, their index, and a config."""
    d.mkdir(parents=True)
    names = list(sd)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    groups: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for name in names:  # contiguous groups of about total/shards bytes
        t = sd[name]
        groups[min(shards - 1, acc * shards // max(total, 1))].append(name)
        acc += t.numel() * t.element_size()
    weight_map = {}
    for i, group in enumerate(g for g in groups if g):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        safetensors.torch.save_file({n: sd[n] for n in group}, str(d / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, shard))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 1024}))
    for p in d.iterdir():
        fsync_path(p)


# --------------------------------------------------------------------------- operations


def sealed_save(keys: Keys, sd: StateDict, path: Path, sign: bool = True) -> None:
    sealedckpt.save(sd, path, key=keys.sealed_key, sign_with=keys.signer if sign else None)


def ct_save(keys: Keys, sd: StateDict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """CryptoTensors: encrypt every tensor (AES-256-GCM) and sign the header (Ed25519), then fsync."""
    from cryptotensors.torch import save_file

    save_file(sd, str(path), metadata=metadata, config={"enc_key": keys.ct_enc, "sign_key": keys.ct_sign})
    fsync_path(path)


def sealed_load(keys: Keys, path: Path, trusted: bool = False) -> Any:
    return sealedckpt.load(path, key=keys.sealed_key, trusted_signers=[keys.pub] if trusted else None)


def ct_load(keys: Keys, path: Path) -> StateDict:
    """CryptoTensors decrypt + verify: every tensor (the header signature is checked on open)."""
    import cryptotensors

    with cryptotensors.safe_open(str(path), framework="pt", config=keys.ct_read_config()) as f:
        return {k: f.get_tensor(k) for k in f.offset_keys()}


def sealed_lazy(keys: Keys, path: Path, name: str, trusted: bool = False) -> torch.Tensor:
    with sealedckpt.open(path, key=keys.sealed_key, trusted_signers=[keys.pub] if trusted else None) as f:
        return f[name]  # type: ignore[no-any-return]


def ct_lazy(keys: Keys, path: Path, name: str) -> torch.Tensor:
    import cryptotensors

    with cryptotensors.safe_open(str(path), framework="pt", config=keys.ct_read_config()) as f:
        return f.get_tensor(name)  # type: ignore[no-any-return]


def st_lazy(path: Path, name: str) -> torch.Tensor:
    """safetensors safe_open + clone (the clone makes the mmap-backed tensor private memory)."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name).clone()  # type: ignore[no-any-return]


def sealed_verify(keys: Keys, path: Path) -> object:
    return sealedckpt.verify(path, trusted_signers=[keys.pub])


def sealed_verify_dir(keys: Keys, d: Path) -> object:
    return sealedckpt.verify_dir(d, trusted_signers=[keys.pub])


def ms_hashing(alg: str) -> Any:
    from model_signing import hashing

    return hashing.Config().use_file_serialization(hashing_algorithm=alg)


def ms_sign(keys: Keys, d: Path, sig: Path, alg: str) -> None:
    """OpenSSF model signing: a manifest of every file's digest, signed with the P-256 key."""
    from model_signing import signing

    signing.Config().use_elliptic_key_signer(private_key=str(keys.ec_private)).set_hashing_config(
        ms_hashing(alg)).sign(pathlib.Path(d), pathlib.Path(sig))  # fmt: skip


def ms_verify(keys: Keys, d: Path, sig: Path, alg: str) -> None:
    """Re-hash every file of ``d`` and compare with the signed manifest (raises on mismatch)."""
    from model_signing import verifying

    verifying.Config().use_elliptic_key_verifier(public_key=str(keys.ec_public)).set_hashing_config(
        ms_hashing(alg)).verify(pathlib.Path(d), pathlib.Path(sig))  # fmt: skip


# --------------------------------------------------------------------------- the workspace


@dataclass
class Workspace:
    """Every file the benchmark reads, under one directory."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        files = {"unsigned": "unsigned.sealed", "signed": "signed.sealed", "ct": "model.cryptotensors",
                 "plain": "plain.safetensors", "hf": "hf", "hf_sealed": "hf.sealed", "one": "one",
                 "keys": "keys.json", "raw": "state.raw", "out": "out"}  # fmt: skip
        if name in files:
            return self.root / files[name]
        raise AttributeError(name)

    def ms_sig(self, what: str, alg: str) -> Path:
        return self.root / f"ms-{what}-{alg}.sig"


def prepare(ws: Workspace, sd: StateDict, keys: Keys, say: Callable[[str], None] = print) -> None:
    """Write every artifact the timed operations read (untimed)."""
    from bench_save_load import write_raw

    keys.dump(ws.keys)
    write_raw(sd, ws.raw)
    sealed_save(keys, sd, ws.unsigned, sign=False)
    sealed_save(keys, sd, ws.signed)
    ct_save(keys, sd, ws.ct)
    safetensors.torch.save_file(sd, str(ws.plain))
    fsync_path(ws.plain)
    write_hf_dir(sd, ws.hf)
    sealedckpt.seal_dir(ws.hf, ws.hf_sealed, key=keys.sealed_key, sign_with=keys.signer)
    for p in ws.hf_sealed.iterdir():
        fsync_path(p)
    ws.one.mkdir()
    os.link(ws.plain, ws.one / "model.safetensors")
    for what in ("one", "hf"):
        for alg in ("blake3", "sha256"):
            ms_sign(keys, getattr(ws, what), ws.ms_sig(what, alg), alg)
    ws.out.mkdir()
    say(f"   prepared {ws.root}")


def files_read(ws: Workspace, target: Path) -> list[Path]:
    """The regular files an operation on ``target`` (a file or a directory) reads."""
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.is_file())
    return [target]
