"""CLI transcripts: arguments, stdout, stderr and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import last_signature, run_cli

import sealedckpt
from sealedckpt import cli
from sealedckpt.crypto import textkeys

run = run_cli


@pytest.fixture
def signed(tmp_path: Path, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey) -> Path:
    p = tmp_path / "m.sealed"
    sealedckpt.save({"w": torch.ones(3)}, p, key=key, sign_with=signer, metadata={"model": "tiny"})
    return p


def test_inspect_text_and_json(capsys: pytest.CaptureFixture[str], signed: Path, key: sealedckpt.SymmetricKey) -> None:
    code, out, err = run(capsys, "inspect", str(signed))
    assert code == 0 and err == ""
    assert f"key id {key.key_id}" in out and "model = tiny" in out and "(not verified)" in out
    code, out, _ = run(capsys, "inspect", str(signed), "--json")
    info = json.loads(out)
    assert code == 0 and info["metadata"] == {"model": "tiny"} and info["key_slots"][0]["key_id"] == key.key_id
    assert info["signatures_verified"] is False


def test_verify_trusted(capsys: pytest.CaptureFixture[str], signed: Path, signer: sealedckpt.SigningKey) -> None:
    pub = textkeys.verify_key_to_text(signer.public)
    code, out, err = run(capsys, "verify", str(signed), "--trust", pub)
    assert code == 0 and "[trusted]" in out and out.strip().endswith("every signature and every chunk verified")
    assert err == ""
    code, out, _ = run(capsys, "verify", str(signed), "--trust", pub, "--json")
    doc = json.loads(out)
    assert doc["ok"] is True and doc["signers"][0]["trusted"] is True and doc["content_digest"].startswith("blake3:")


def test_verify_without_trust_says_so(capsys: pytest.CaptureFixture[str], signed: Path) -> None:
    code, out, err = run(capsys, "verify", str(signed))
    assert code == 0 and "[no --trust given]" in out and "hint: pass --trust" in err


def test_verify_untrusted_fails_without_printing_success(capsys: pytest.CaptureFixture[str], signed: Path) -> None:
    other = textkeys.verify_key_to_text(sealedckpt.SigningKey.generate().public)
    code, out, err = run(capsys, "verify", str(signed), "--trust", other)
    assert code == cli.EXIT_SIGNATURE and "OK" not in out
    assert err.startswith("sealedckpt: error: ") and "untrusted" in err


def test_verify_tampered_file(capsys: pytest.CaptureFixture[str], signed: Path, signer: sealedckpt.SigningKey) -> None:
    data = bytearray(signed.read_bytes())
    data[last_signature(data)["block"] - 32 - 40] ^= 1  # inside the one chunk (before its 32-byte digest)
    signed.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", str(signed), "--trust", textkeys.verify_key_to_text(signer.public), "--json")
    assert code == cli.EXIT_INTEGRITY
    assert json.loads(out) == {"ok": False, "kind": "IntegrityError", "exit_code": 4, "error": json.loads(out)["error"]}
    assert "OK" not in out and "sealedckpt: error:" in err


def test_verify_unsigned(capsys: pytest.CaptureFixture[str], tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    p = tmp_path / "u.sealed"
    sealedckpt.save({"x": 1}, p, key=key)
    code, out, err = run(capsys, "verify", str(p))
    assert code == cli.EXIT_SIGNATURE and out == "" and "not signed" in err


def test_mistyped_public_key_is_rejected(
    capsys: pytest.CaptureFixture[str], signed: Path, signer: sealedckpt.SigningKey
) -> None:
    pub = textkeys.verify_key_to_text(signer.public)
    i = len(pub) - 10
    typo = pub[:i] + ("q" if pub[i] != "q" else "p") + pub[i + 1 :]
    code, out, err = run(capsys, "verify", str(signed), "--trust", typo)
    assert code == cli.EXIT_USAGE and out == "" and "checksum" in err


def test_pickle_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"  # the name lies
    torch.save({"w": torch.ones(1)}, p)
    code, out, err = run(capsys, "inspect", str(p))
    assert code == cli.EXIT_FORMAT and out == ""
    assert "sealedckpt: error: refusing a zip archive" in err and "\nhint: " in err


def test_missing_file_and_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "inspect", str(tmp_path / "nope"))
    assert code == cli.EXIT_ERROR and "No such file" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == cli.EXIT_USAGE and "invalid choice" in err


def test_python_dash_m(signed: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sealedckpt", "inspect", str(signed)], capture_output=True, text=True)
    assert r.returncode == 0 and "sealed checkpoint, format v1" in r.stdout
