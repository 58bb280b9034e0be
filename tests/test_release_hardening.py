"""Release directories and rollback: checks only against authenticated fields, safe outputs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import safetensors.torch as st
import torch
from helpers import run_cli

import sealedckpt
from sealedckpt import cli
from sealedckpt.release import directory as distdir

MANIFEST = "sealedckpt-manifest.json"
SIG = "sealedckpt-manifest.sig"


@pytest.fixture
def publisher() -> sealedckpt.SigningKey:
    return sealedckpt.SigningKey.generate()


def _model(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    st.save_file({"a": torch.arange(4.0)}, str(d / "model-00001-of-00002.safetensors"))
    st.save_file({"b": torch.ones(3)}, str(d / "model-00002-of-00002.safetensors"))
    (d / "config.json").write_text('{"hidden_size": 8}')
    return d


def _release(tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey | None, version: str = "2",
             src: Path | None = None) -> Path:  # fmt: skip
    out = tmp_path / "sealed"
    distdir.seal_dir(src or _model(tmp_path), out, keys=[key], signers=[signer] if signer else [],
                     metadata={"model": "tiny", "version": version})  # fmt: skip
    return out


def _edit_manifest_version(out: Path, version: str) -> None:
    """A keyless attacker rewrites the manifest's public version and drops the signatures."""
    doc = json.loads((out / MANIFEST).read_bytes())
    doc["metadata"]["version"] = version
    (out / MANIFEST).write_text(json.dumps(doc))
    (out / SIG).unlink(missing_ok=True)


# --- item 4: rollback parameters everywhere, only against authenticated fields --------------------


def test_load_dir_takes_rollback_parameters(tmp_path: Path, key: sealedckpt.SymmetricKey,
                                            publisher: sealedckpt.SigningKey) -> None:  # fmt: skip
    out = _release(tmp_path, key, publisher)
    trust = [publisher.public]
    sd = sealedckpt.load_dir(out, key=key, trusted_signers=trust, min_version=2, expect_model="tiny")
    assert sorted(sd) == ["a", "b"]
    with pytest.raises(sealedckpt.RollbackError, match="older than the required minimum 3"):
        sealedckpt.load_dir(out, key=key, trusted_signers=trust, min_version=3)
    with pytest.raises(sealedckpt.RollbackError, match="expected 'other'"):
        sealedckpt.load_dir(out, key=key, expect_model="other")  # key holder: checked in sealed headers


def test_open_takes_rollback_parameters(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    p = tmp_path / "f.sealed"
    sealedckpt.save({"w": torch.ones(2)}, p, key=key, metadata={"model": "tiny", "version": "4"})
    with sealedckpt.open(p, key=key, min_version=4, expect_model="tiny") as f:
        assert list(f.keys()) == ["w"]
    with pytest.raises(sealedckpt.RollbackError, match="older than the required minimum 5"):
        sealedckpt.open(p, key=key, min_version=5)
    with pytest.raises(sealedckpt.RollbackError, match="expected 'x'"):
        sealedckpt.open(p, key=key, expect_model="x")


def test_keyless_manifest_edit_does_not_pass_unseal_dir_min_version(
    tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    out = _release(tmp_path, key, publisher, version="2")
    _edit_manifest_version(out, "99")
    with pytest.raises(sealedckpt.RollbackError, match="file is version 2, older than the required minimum 50"):
        sealedckpt.unseal_dir(out, tmp_path / "plain", key=key, min_version=50)
    assert not (tmp_path / "plain").exists()
    with pytest.raises(sealedckpt.RollbackError, match="older than the required minimum 50"):
        sealedckpt.load_dir(out, key=key, min_version=50)


def test_unseal_dir_cli_min_version_without_trust_checks_sealed_headers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_cli(capsys, "key", "gen", "--default", "--name", "k")
    src = _model(tmp_path)
    out = tmp_path / "s"
    code, _, err = run_cli(capsys, "seal-dir", str(src), "-o", str(out), "--meta", "version=2", "--meta", "model=tiny")
    assert code == 0, err
    _edit_manifest_version(out, "99")
    code, _, err = run_cli(capsys, "unseal-dir", str(out), "-o", str(tmp_path / "p"), "--min-version", "50")
    assert code == cli.EXIT_SIGNATURE and "older than the required minimum 50" in err
    assert not (tmp_path / "p").exists()
    code, _, err = run_cli(capsys, "unseal-dir", str(out), "-o", str(tmp_path / "p"), "--min-version", "2")
    assert code == 0, err


def test_untrusted_resigned_manifest_does_not_authenticate_version(
    tmp_path: Path, key: sealedckpt.SymmetricKey, publisher: sealedckpt.SigningKey
) -> None:
    out = _release(tmp_path, key, publisher, version="2")
    _edit_manifest_version(out, "99")
    attacker = sealedckpt.SigningKey.generate()
    distdir.add_dir_signatures(out, [attacker])  # validly signed, by nobody trusted
    with pytest.raises(sealedckpt.RollbackError, match="older than the required minimum 50"):
        sealedckpt.unseal_dir(out, tmp_path / "plain", key=key, min_version=50)
    with pytest.raises(sealedckpt.RollbackError, match="--trust"):
        sealedckpt.verify_dir(out, min_version=50)


def test_verify_dir_rollback_check_needs_a_trusted_signature(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: sealedckpt.SymmetricKey,
    publisher: sealedckpt.SigningKey,
) -> None:  # fmt: skip
    out = _release(tmp_path, key, publisher, version="2")
    with pytest.raises(sealedckpt.RollbackError, match="without a key") as info:
        sealedckpt.verify_dir(out, min_version=1)
    assert "--trust" in str(info.value)
    with pytest.raises(sealedckpt.RollbackError, match="verified trusted signature"):
        sealedckpt.verify_dir(out, expect_model="tiny")
    assert sealedckpt.verify_dir(out, trusted_signers=[publisher.public], min_version=2).metadata["version"] == "2"
    code, text, err = run_cli(capsys, "verify-dir", str(out), "--min-version", "1")
    assert code == cli.EXIT_SIGNATURE and "OK" not in text and "--trust" in err


def test_dir_rollback_with_no_sealed_file_and_no_trust_is_refused(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "config.json").write_text("{}")
    out = tmp_path / "s"
    distdir.seal_dir(src, out, keys=[key], keep_public=True, metadata={"version": "9"})
    with pytest.raises(sealedckpt.RollbackError, match="no sealed file carries authenticated metadata"):
        sealedckpt.unseal_dir(out, tmp_path / "p", key=key, min_version=1)
    assert not (tmp_path / "p").exists()
    assert sealedckpt.unseal_dir(out, tmp_path / "p", key=key) == ["config.json"]


def test_fullwidth_version_digits_are_not_a_version(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    p = tmp_path / "f.sealed"
    sealedckpt.save({"w": torch.ones(1)}, p, key=key, metadata={"version": "\uff11\uff12"})  # fullwidth "12"
    with pytest.raises(sealedckpt.RollbackError, match="no numeric public 'version'"):
        sealedckpt.load(p, key=key, min_version=1)


# --- item 11: decrypted outputs are 0600 --------------------------------------------------------------


def test_unseal_dir_decrypted_files_are_private(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    out = _release(tmp_path, key, None)
    os.chmod(out / "config.json.sealed", 0o400)
    old = os.umask(0o022)
    try:
        sealedckpt.unseal_dir(out, tmp_path / "p", key=key)
    finally:
        os.umask(old)
    modes = {n: stat.S_IMODE(os.stat(tmp_path / "p" / n).st_mode) for n in os.listdir(tmp_path / "p")}
    assert modes == {"model-00001-of-00002.safetensors": 0o600, "model-00002-of-00002.safetensors": 0o600,
                     "config.json": 0o400}  # fmt: skip
    assert (tmp_path / "p" / "config.json").read_bytes() == b'{"hidden_size": 8}'


# --- item 12: nothing under its final name on failure ---------------------------------------------------


def test_unseal_dir_failure_leaves_no_output(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    out = _release(tmp_path, key, None)
    victim = out / "model-00002-of-00002.safetensors.sealed"
    raw = bytearray(victim.read_bytes())
    raw[-200] ^= 1  # inside the last chunk: found only after earlier files are written
    victim.write_bytes(bytes(raw))
    with pytest.raises(sealedckpt.SealedCkptError):
        sealedckpt.unseal_dir(out, tmp_path / "p", key=key)
    assert not (tmp_path / "p").exists()
    assert sorted(os.listdir(tmp_path)) == ["model", "sealed"]  # no staging leftovers


def test_unseal_dir_output_may_be_an_empty_dir_or_under_new_parents(
    tmp_path: Path, key: sealedckpt.SymmetricKey
) -> None:
    out = _release(tmp_path, key, None)
    (tmp_path / "empty").mkdir()
    assert len(sealedckpt.unseal_dir(out, tmp_path / "empty", key=key)) == 3
    assert (tmp_path / "empty" / "config.json").read_bytes() == b'{"hidden_size": 8}'
    assert len(sealedckpt.unseal_dir(out, tmp_path / "new" / "deeper" / "p", key=key)) == 3
    assert sorted(os.listdir(tmp_path / "new" / "deeper" / "p")) == sorted(os.listdir(tmp_path / "empty"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(sealedckpt.FormatError, match="exists and is not empty"):
        sealedckpt.unseal_dir(out, tmp_path / "full", key=key)
    assert os.listdir(tmp_path / "full") == ["x"]
