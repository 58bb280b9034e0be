"""Audited distribution: trust store, policy, rollback, counter-signatures, sealed directories, audit."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch as st
import torch
from helpers import run_cli

import sealedckpt
from sealedckpt import cli
from sealedckpt.crypto import textkeys
from sealedckpt.release import directory as distdir
from sealedckpt.stores import audit
from sealedckpt.stores.trust import TrustStore

run = run_cli


@pytest.fixture
def publisher() -> sealedckpt.SigningKey:
    return sealedckpt.SigningKey.generate()


def _sealed(path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey | None, version: str) -> Path:
    sealedckpt.save({"w": torch.full((4,), float(version))}, path, key=key, sign_with=signer,
                    metadata={"model": "tiny", "version": version})  # fmt: skip
    return path


# --- trust store and policy --------------------------------------------------------------------


def test_trust_store_and_policy_switch(
    tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = _sealed(tmp_path / "a.sealed", key, publisher, "1")
    unsigned = _sealed(tmp_path / "b.sealed", key, None, "1")
    with pytest.raises(sealedckpt.SignatureError, match="trust store is empty"):
        sealedckpt.load(signed, key=key, trusted_signers="store")
    TrustStore().add("acme", publisher.public)
    assert torch.equal(sealedckpt.load(signed, key=key, trusted_signers="store")["w"], torch.ones(4))
    assert sealedckpt.load(unsigned, key=key)["w"].shape == (4,)  # no policy: unsigned is fine
    monkeypatch.setenv("SEALEDCKPT_REQUIRE_SIGNATURE", "1")
    with pytest.raises(sealedckpt.SignatureError, match="not signed"):
        sealedckpt.load(unsigned, key=key)
    assert sealedckpt.load(signed, key=key)["w"].shape == (4,)
    other = sealedckpt.SigningKey.generate()
    with pytest.raises(sealedckpt.SignatureError, match="untrusted"):
        sealedckpt.load(_sealed(tmp_path / "c.sealed", key, other, "1"), key=key)
    assert sealedckpt.verify(signed).signers[0].trusted


def test_trust_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    pub = textkeys.verify_key_to_text(publisher.public)
    assert run(capsys, "trust", "add", "acme", pub)[0] == 0
    code, out, err = run(capsys, "trust", "add", "again", pub)
    assert code == cli.EXIT_KEY and "already trusted" in err
    code, out, _ = run(capsys, "trust", "list", "--json")
    (row,) = json.loads(out)
    assert row == {"name": "acme", "public_key": pub, "key_id": publisher.key_id, "added": row["added"],
                   "kind": "ed25519", "roles": ["publisher"], "scope": ["*"], "expires": None, "revoked": False,
                   "revoked_by": None}  # fmt: skip
    signed = _sealed(tmp_path / "a.sealed", key, publisher, "1")
    code, out, _ = run(capsys, "verify", str(signed), "--trust", "acme")
    assert code == 0 and "[trusted]" in out
    code, out, _ = run(capsys, "verify", str(signed), "--trust", "store")
    assert code == 0 and "[trusted]" in out
    assert run(capsys, "trust", "rm", "acme")[0] == 0
    code, _, err = run(capsys, "verify", str(signed), "--trust", "store")
    assert code == cli.EXIT_SIGNATURE and "trust store is empty" in err


# --- rollback ----------------------------------------------------------------------------------


def test_rollback_protection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    v7 = _sealed(tmp_path / "v7.sealed", key, publisher, "7")
    v9 = _sealed(tmp_path / "v9.sealed", key, publisher, "9")
    assert sealedckpt.load(v9, key=key, trusted_signers=[publisher.public], min_version=8, expect_model="tiny")
    # an attacker replays the old, validly signed v7 in place of v9
    shutil.copyfile(v7, v9)
    with pytest.raises(sealedckpt.RollbackError, match="older than the required minimum 8"):
        sealedckpt.load(v9, key=key, trusted_signers=[publisher.public], min_version=8)
    with pytest.raises(sealedckpt.RollbackError, match="expected 'other'"):
        sealedckpt.verify(v7, expect_model="other", trusted_signers=[publisher.public])
    assert isinstance(sealedckpt.RollbackError("x"), sealedckpt.SignatureError)
    pub = textkeys.verify_key_to_text(publisher.public)
    code, out, err = run(capsys, "verify", str(v9), "--min-version", "8", "--trust", pub)
    assert code == cli.EXIT_SIGNATURE and "OK" not in out and "older than" in err
    # without a key, only a trusted signature authenticates model/version: anyone can sign
    forged = _sealed(tmp_path / "forged.sealed", key, sealedckpt.SigningKey.generate(), "99")
    with pytest.raises(sealedckpt.RollbackError, match="trusted signature"):
        sealedckpt.verify(forged, min_version=8)
    code, out, err = run(capsys, "verify", str(forged), "--min-version", "8")
    assert code == cli.EXIT_SIGNATURE and "OK" not in out and "trusted signature" in err
    unversioned = tmp_path / "u.sealed"
    sealedckpt.save({"x": 1}, unversioned, key=key)
    with pytest.raises(sealedckpt.RollbackError, match="no numeric"):
        sealedckpt.load(unversioned, key=key, min_version=1)


# --- counter-signatures ------------------------------------------------------------------------


def test_counter_signature_keeps_the_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    path = _sealed(tmp_path / "m.sealed", key, publisher, "1")
    root = sealedckpt.verify(path).root
    auditor = sealedckpt.SigningKey.generate()
    res = sealedckpt.sign(path, auditor, trusted_signers=[publisher.public])  # no decryption key
    assert [s.key_id for s in res.signers] == [publisher.key_id, auditor.key_id] and res.root == root
    again = sealedckpt.verify(path, trusted_signers=[publisher.public])
    assert [s.trusted for s in again.signers] == [True, False]
    # the auditor's counter-signature vouches for the release; it is not one
    with pytest.raises(sealedckpt.SignatureError, match="no trusted key signed a release statement"):
        sealedckpt.load(path, key=key, trusted_signers=[auditor.public])
    assert sealedckpt.load(path, key=key, trusted_signers=[publisher.public, auditor.public])["w"].shape == (4,)
    with pytest.raises(sealedckpt.SignatureError, match="already signed"):
        sealedckpt.sign(path, auditor)
    # an auditor does not sign what fails verification
    bad = bytearray(path.read_bytes())
    bad[400] ^= 1
    path.write_bytes(bytes(bad))
    with pytest.raises(sealedckpt.SealedCkptError):
        sealedckpt.sign(path, sealedckpt.SigningKey.generate())
    assert path.read_bytes() == bytes(bad)  # untouched


def test_signing_an_unsigned_file_later(
    tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    path = _sealed(tmp_path / "m.sealed", key, None, "1")
    sealedckpt.sign(path, publisher, statement="release")
    assert sealedckpt.load(path, key=key, trusted_signers=[publisher.public])["w"].shape == (4,)
    assert [s.statement.type for s in sealedckpt.verify(path).signers] == ["release"]


def test_sign_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    path = _sealed(tmp_path / "m.sealed", key, publisher, "1")
    run(capsys, "key", "gen", "--kind", "signing", "--name", "auditor")
    code, out, _ = run(
        capsys, "sign", str(path), "--key", "auditor", "--trust", textkeys.verify_key_to_text(publisher.public)
    )
    assert code == 0 and "signers now" in out
    code, out, _ = run(capsys, "verify", str(path), "--json")
    assert code == 0 and len(json.loads(out)["signers"]) == 2


# --- sealed model directories ------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny transformers-style folder: config, tokenizer, 3 shards and the index."""
    d = tmp_path / "model"
    d.mkdir()
    gen = torch.Generator().manual_seed(0)
    sd = {f"model.layers.{i}.mlp.weight": torch.randn(16, 8, generator=gen) for i in range(6)}
    sd["lm_head.weight"] = torch.randn(32, 8, generator=gen)
    weight_map = {}
    names = sorted(sd)
    for s in range(3):
        shard = f"model-0000{s + 1}-of-00003.safetensors"
        part = {n: sd[n] for n in names[s::3]}
        st.save_file(part, str(d / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (d / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 8}))
    (d / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0, "b": 1}}))
    return d, sd


def _seal_dir(
    src: Path, out: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey, keep_public: bool = False
) -> None:
    distdir.seal_dir(
        src, out, keys=[key], signers=[signer], keep_public=keep_public, metadata={"model": "tiny", "version": "2"}
    )


@pytest.mark.parametrize("keep_public", [False, True])
def test_sealed_directory_round_trip(
    model_dir: tuple[Path, dict[str, torch.Tensor]],
    tmp_path: Path,
    key: sealedckpt.SymmetricKey,
    publisher: sealedckpt.SigningKey,
    keep_public: bool,
) -> None:
    src, sd = model_dir
    out = tmp_path / "sealed"
    _seal_dir(src, out, key, publisher, keep_public)
    names = sorted(os.listdir(out))
    assert "sealedckpt-manifest.json" in names and "sealedckpt-manifest.sig" in names
    assert ("config.json" in names) == keep_public and ("config.json.sealed" in names) != keep_public
    res = distdir.verify_dir(out, trusted_signers=[publisher.public])
    assert len(res.entries) == 6 and res.signers[0].trusted and res.metadata["version"] == "2"
    loaded = sealedckpt.load_dir(out, key=key, trusted_signers=[publisher.public])
    assert sorted(loaded) == sorted(sd) and all(torch.equal(loaded[n], sd[n]) for n in sd)
    plain = tmp_path / "plain"
    distdir.unseal_dir(out, plain, [key], trusted_signers=[publisher.public])
    assert sorted(os.listdir(plain)) == sorted(os.listdir(src))
    assert (plain / "config.json").read_bytes() == (src / "config.json").read_bytes()
    for shard in (p for p in os.listdir(src) if p.endswith(".safetensors")):
        a, b = st.load_file(str(src / shard)), st.load_file(str(plain / shard))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tamper(out: Path, how: str) -> None:
    s1, s2 = out / "model-00001-of-00003.safetensors.sealed", out / "model-00002-of-00003.safetensors.sealed"
    if how == "rename":
        s1.rename(out / "model-00009-of-00003.safetensors.sealed")
    elif how == "swap":
        tmp = out / "tmp"
        s1.rename(tmp)
        s2.rename(s1)
        tmp.rename(s2)
    elif how == "drop":
        s2.unlink()
    elif how == "add":
        shutil.copyfile(s1, out / "extra.safetensors.sealed")
    elif how == "edit":
        data = bytearray(s1.read_bytes())
        data[len(data) // 2] ^= 1
        s1.write_bytes(bytes(data))
    elif how == "edit-public":
        (out / "config.json").write_text('{"model_type": "evil"}')
    elif how == "manifest":
        m = out / "sealedckpt-manifest.json"
        m.write_text(m.read_text().replace('"version": "2"', '"version": "3"'))


@pytest.mark.parametrize("how", ["rename", "swap", "drop", "add", "edit", "edit-public", "manifest"])
def test_sealed_directory_tampering_is_detected(
    model_dir: tuple[Path, dict[str, torch.Tensor]],
    tmp_path: Path,
    key: sealedckpt.SymmetricKey,
    publisher: sealedckpt.SigningKey,
    how: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, _ = model_dir
    out = tmp_path / "sealed"
    _seal_dir(src, out, key, publisher, keep_public=True)
    _tamper(out, how)
    with pytest.raises(sealedckpt.SealedCkptError):
        distdir.verify_dir(out, trusted_signers=[publisher.public])
    with pytest.raises(sealedckpt.SealedCkptError):
        sealedckpt.load_dir(out, key=key, trusted_signers=[publisher.public])
    code, stdout, err = run(capsys, "verify-dir", str(out), "--trust", textkeys.verify_key_to_text(publisher.public))
    assert code in (cli.EXIT_INTEGRITY, cli.EXIT_SIGNATURE, cli.EXIT_FORMAT) and "OK" not in stdout and "error:" in err


def test_index_must_match_the_shards(
    model_dir: tuple[Path, dict[str, torch.Tensor]],
    tmp_path: Path,
    key: sealedckpt.SymmetricKey,
    publisher: sealedckpt.SigningKey,
) -> None:
    src, _ = model_dir
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    first = next(iter(idx["weight_map"]))
    idx["weight_map"][first] = "model-00003-of-00003.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    _seal_dir(src, tmp_path / "sealed", key, publisher)
    with pytest.raises(sealedckpt.IntegrityError, match="index says"):
        sealedckpt.load_dir(tmp_path / "sealed", key=key, trusted_signers=[publisher.public])


def test_rewrapped_directory_still_verifies(
    model_dir: tuple[Path, dict[str, torch.Tensor]],
    tmp_path: Path,
    key: sealedckpt.SymmetricKey,
    publisher: sealedckpt.SigningKey,
) -> None:
    from sealedckpt import container

    src, sd = model_dir
    out = tmp_path / "sealed"
    _seal_dir(src, out, key, publisher)
    new = sealedckpt.SymmetricKey.generate()
    for p in out.glob("*.sealed"):
        buf = io.BytesIO()
        with open(p, "rb") as f:
            container.rewrap(f, buf, [key], [new])
        p.write_bytes(buf.getvalue())
    distdir.verify_dir(out, trusted_signers=[publisher.public])  # roots exclude key slots
    assert sorted(sealedckpt.load_dir(out, key=new, trusted_signers=[publisher.public])) == sorted(sd)


def test_dir_cli(
    capsys: pytest.CaptureFixture[str], model_dir: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    src, _ = model_dir
    run(capsys, "key", "gen", "--default", "--name", "k")
    code, out, _ = run(capsys, "key", "gen", "--kind", "signing", "--name", "pub")
    pub = out.split("public key: ")[1].strip()
    code, out, _err = run(
        capsys,
        "seal-dir",
        str(src),
        "-o",
        str(tmp_path / "s"),
        "--sign",
        "pub",
        "--meta",
        "version=5",
        "--meta",
        "model=tiny",
    )
    assert code == 0 and "manifest signed" in out
    code, out, _err = run(
        capsys, "verify-dir", str(tmp_path / "s"), "--trust", pub, "--min-version", "5", "--model", "tiny"
    )
    assert code == 0 and out.strip().endswith("every digest verified")
    code, out, _err = run(capsys, "verify-dir", str(tmp_path / "s"), "--trust", pub, "--min-version", "6")
    assert code == cli.EXIT_SIGNATURE and "OK" not in out
    code, out, _err = run(capsys, "unseal-dir", str(tmp_path / "s"), "-o", str(tmp_path / "p"), "--trust", pub)
    assert code == 0 and sorted(os.listdir(tmp_path / "p")) == sorted(os.listdir(src))
    run(capsys, "key", "gen", "--kind", "signing", "--name", "auditor")
    assert run(capsys, "sign-dir", str(tmp_path / "s"), "--key", "auditor", "--trust", pub)[0] == 0
    code, out, _ = run(capsys, "verify-dir", str(tmp_path / "s"), "--json")
    assert code == 0 and len(json.loads(out)["signers"]) == 2


# --- audit ---------------------------------------------------------------------------------------


def test_cli_operations_are_audited(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "m.safetensors"
    st.save_file({"w": torch.ones(2)}, str(f))
    run(capsys, "key", "gen", "--default", "--name", "k")
    run(capsys, "key", "gen", "--kind", "signing", "--name", "pub")
    assert run(capsys, "seal", str(f), "-o", str(tmp_path / "m.sealed"), "--sign", "pub")[0] == 0
    assert run(capsys, "verify", str(tmp_path / "m.sealed"))[0] == 0
    assert run(capsys, "verify", str(tmp_path / "nope.sealed"))[0] == cli.EXIT_ERROR
    assert run(capsys, "inspect", str(tmp_path / "m.sealed"))[0] == 0  # read-only: not recorded
    records = audit.read()
    assert [(r["op"], r["outcome"]) for r in records] == [
        ("key.gen", "ok"),
        ("key.gen", "ok"),
        ("seal", "ok"),
        ("verify", "ok"),
        ("verify", "error: FileNotFoundError"),
    ]
    seal = records[2]
    assert seal["path"] == str(tmp_path / "m.sealed") and seal["digest"].startswith("blake3:")
    assert seal["signer_ids"] and seal["key_ids"] and records[3]["digest"] == seal["digest"]
    text = audit.log_path().read_text()
    assert "SCKPT-" not in text  # never a secret
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "5 records" in out
    lines = text.splitlines()
    audit.log_path().write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # drop the seal record
    code, out, _err = run(capsys, "audit", "verify")
    assert code == cli.EXIT_INTEGRITY and "OK" not in out


def test_api_audit_is_opt_in(tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "x.sealed"
    sealedckpt.save({"x": 1}, p, key=key)
    assert not audit.log_path().exists()
    monkeypatch.setenv("SEALEDCKPT_AUDIT", "1")
    sealedckpt.save({"x": 1}, p, key=key)
    sealedckpt.load(p, key=key)
    with pytest.raises(sealedckpt.DecryptionError):
        sealedckpt.load(p, key=sealedckpt.SymmetricKey.generate())
    recs = audit.read()
    assert [(r["op"], r["outcome"]) for r in recs] == [
        ("save", "ok"),
        ("load", "ok"),
        ("load", "error: DecryptionError"),
    ]
    assert recs[0]["digest"] == recs[1]["digest"] and recs[0]["digest"].startswith("commitment:")
    assert recs[0]["key_ids"] == [key.key_id] and audit.verify().records == 3


def test_audit_switch_from_code_and_signed_records(
    tmp_path: Path, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "x.sealed"
    audit.set_enabled(True)
    try:
        sealedckpt.save({"x": 1}, p, key=key)
        monkeypatch.setenv("SEALEDCKPT_AUDIT", "1")
        audit.set_enabled(False)
        sealedckpt.save({"x": 1}, p, key=key)  # code wins over the environment
    finally:
        audit.set_enabled(None)
    assert [r["op"] for r in audit.read()] == ["save"]
    ks = sealedckpt.Keystore()
    rec = ks.generate("signing", "log-key")
    monkeypatch.setenv("SEALEDCKPT_AUDIT_KEY", "log-key")
    sealedckpt.load(p, key=key)
    last = audit.read()[-1]
    assert last["op"] == "load" and last["signer"] == rec.public and "sig" in last
    vk = textkeys.verify_key_from_text(rec.public or "")
    report = audit.verify(trusted=None)
    assert report.records == 2 and report.signed == 1
    with pytest.raises(audit.AuditError):
        audit.verify(trusted=[vk])  # the first record is unsigned


def test_large_blob_streams_through_unseal_dir(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    src = tmp_path / "m"
    src.mkdir()
    blob = os.urandom(9 * 1024 * 1024 + 123)  # spans three 4 MiB chunks after the payload header
    (src / "tokenizer.model").write_bytes(blob)
    distdir.seal_dir(src, tmp_path / "s", keys=[key])
    distdir.unseal_dir(tmp_path / "s", tmp_path / "p", [key])
    assert (tmp_path / "p" / "tokenizer.model").read_bytes() == blob
