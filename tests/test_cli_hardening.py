"""CLI hardening: unambiguous key references, unsealed files' modes and payload checks, escaped
terminal output, recursive rewrap and a key removal that refuses while files still need the key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file, save_file

import sealedckpt
from sealedckpt import cli, container
from sealedckpt.crypto import textkeys

Capsys = pytest.CaptureFixture[str]
EVIL = "\x1b]0;owned\x07\x1b[2J\u202eevil\u2066\x9b31m\r"
EVIL_SHOWN = "\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\u2066\\x9b31m\\x0d"


def ok(capsys: Capsys, *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, (argv, err)
    return out


def gen(capsys: Capsys, *argv: str) -> dict[str, str]:
    rec: dict[str, str] = json.loads(ok(capsys, "key", "gen", "--json", *argv))
    return rec


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.arange(6.0)}, str(tmp_path / "m.safetensors"))
    return tmp_path


# --- item 10: a bare word is a key name, never a file --------------------------------------------


def test_planted_trust_file_does_not_win(capsys: Capsys, cwd: Path) -> None:
    """A file in the working directory named like the publisher does not make an attacker trusted."""
    gen(capsys, "--name", "k", "--default")
    attacker = sealedckpt.SigningKey.generate()
    sealedckpt.save({"w": torch.ones(2)}, cwd / "evil.sealed", key=_key(capsys), sign_with=attacker)
    (cwd / "release").write_text(textkeys.verify_key_to_text(attacker.public) + "\n")
    code, out, err = run_cli(capsys, "verify", "evil.sealed", "--trust", "release")
    assert code == cli.EXIT_USAGE and out == ""
    assert err.splitlines() == [
        "sealedckpt: error: --trust no key named 'release' (a file of that name is read only as ./release)",
        "hint: a bare word is a key name; write ./release to use the file",
    ]
    out = ok(capsys, "verify", "evil.sealed", "--trust", "./release")  # explicit path: the user's choice
    assert "[trusted]" in out
    # a trusted publisher of that name, and the planted file: ambiguous, refused
    ok(capsys, "trust", "add", "release", textkeys.verify_key_to_text(sealedckpt.SigningKey.generate().public))
    code, out, err = run_cli(capsys, "verify", "evil.sealed", "--trust", "release", "--json")
    assert code == cli.EXIT_USAGE and json.loads(out)["exit_code"] == 2
    assert err.startswith("sealedckpt: error: --trust 'release' is both a key name and a file in the current directory")
    assert "hint: write ./release for the file" in err


def _key(capsys: Capsys) -> sealedckpt.SymmetricKey:
    from sealedckpt.stores.keystore import Keystore

    ks = Keystore()
    k = ks.secret(ks.find("k"))
    assert isinstance(k, sealedckpt.SymmetricKey)
    return k


def test_planted_recipient_file_does_not_win(capsys: Capsys, cwd: Path) -> None:
    """``seal --to alice`` seals to the keystore's alice, not to a file ./alice an attacker planted."""
    alice = gen(capsys, "--name", "alice", "--kind", "recipient")
    attacker = sealedckpt.RecipientKey.generate()
    (cwd / "alice").write_text(textkeys.public_to_text(attacker.public))
    code, out, err = run_cli(capsys, "seal", "m.safetensors", "-o", "x.sealed", "--to", "alice")
    assert code == cli.EXIT_USAGE and out == ""
    assert err.splitlines()[0] == (
        "sealedckpt: error: --to 'alice' is both a key name and a file in the current directory"
    )
    assert not (cwd / "x.sealed").exists()
    ok(capsys, "seal", "m.safetensors", "-o", "x.sealed", "--to", alice["id"])  # by id: unambiguous
    ok(capsys, "unseal", "x.sealed", "-o", "x.out", "--key", alice["id"])
    ok(capsys, "seal", "m.safetensors", "-o", "y.sealed", "--to", "./alice")  # explicit path: the file
    assert run_cli(capsys, "unseal", "y.sealed", "-o", "y.out", "--key", alice["id"])[0] == cli.EXIT_KEY


def test_secret_key_options_take_names_only(capsys: Capsys, cwd: Path) -> None:
    gen(capsys, "--name", "k", "--default")
    gen(capsys, "--name", "s", "--kind", "signing")
    (cwd / "k").write_text("planted")
    (cwd / "s").write_text("planted")
    for argv, option in ((["--key", "k"], "--key"), (["--sign", "s"], "--sign")):
        code, _, err = run_cli(capsys, "seal", "m.safetensors", "-o", "x.sealed", *argv)
        assert code == cli.EXIT_USAGE
        assert err.startswith(f"sealedckpt: error: {option} '{argv[1]}' is both a key name and a file"), err
    code, _, err = run_cli(capsys, "seal", "m.safetensors", "-o", "x.sealed", "--key", "./k")
    assert code == cli.EXIT_USAGE
    assert err.startswith("sealedckpt: error: --key ./k: a path, but this option takes a keystore name or key id")
    assert not (cwd / "x.sealed").exists()
    os.unlink(cwd / "k")
    ok(capsys, "seal", "m.safetensors", "-o", "x.sealed", "--key", "k")


# --- item 11: unsealed plaintext is private --------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_unseal_output_mode(capsys: Capsys, cwd: Path) -> None:
    gen(capsys, "--name", "k", "--default")
    ok(capsys, "seal", "m.safetensors", "-o", "x.sealed")
    old = os.umask(0o022)
    try:
        ok(capsys, "unseal", "x.sealed", "-o", "plain.safetensors")
        assert stat.S_IMODE(os.stat("plain.safetensors").st_mode) == 0o600
        os.chmod("x.sealed", 0o400)  # stricter input: kept
        ok(capsys, "unseal", "x.sealed", "-o", "plain2.safetensors")
        assert stat.S_IMODE(os.stat("plain2.safetensors").st_mode) == 0o400
    finally:
        os.umask(old)
    assert torch.equal(load_file("plain.safetensors")["w"], torch.arange(6.0))


# --- item 12: unseal checks the payload like load, and writes nothing otherwise --------------------


def _seal_raw(path: Path, payload: bytes, key: sealedckpt.SymmetricKey) -> None:
    with open(path, "wb") as f:
        container.seal(f, len(payload), [memoryview(payload)], keys=[key])


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.",
        b"PK\x03\x04" + b"\x00" * 200,  # a torch.save zip
        b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'[:16],
    ],
    ids=["pickle", "zip", "truncated-header"],
)
def test_unseal_refuses_non_safetensors_payload(capsys: Capsys, cwd: Path, payload: bytes) -> None:
    gen(capsys, "--name", "k", "--default")
    _seal_raw(cwd / "x.sealed", payload, _key(capsys))
    code, out, err = run_cli(capsys, "unseal", "x.sealed", "-o", "out.safetensors")
    assert code == cli.EXIT_FORMAT and out == "" and err.startswith("sealedckpt: error: ")
    assert sorted(os.listdir(cwd)) == ["m.safetensors", "x.sealed"]


def test_unseal_refuses_plain_safetensors_without_structure(capsys: Capsys, cwd: Path) -> None:
    """A valid safetensors file sealed raw (no sealedckpt structure) is not what load accepts either."""
    gen(capsys, "--name", "k", "--default")
    _seal_raw(cwd / "x.sealed", (cwd / "m.safetensors").read_bytes(), _key(capsys))
    with pytest.raises(sealedckpt.FormatError):
        sealedckpt.load(cwd / "x.sealed", key=_key(capsys))
    code, _, err = run_cli(capsys, "unseal", "x.sealed", "-o", "out.safetensors")
    assert code == cli.EXIT_FORMAT, err
    assert not (cwd / "out.safetensors").exists()


def test_unseal_late_chunk_failure_leaves_nothing(capsys: Capsys, cwd: Path) -> None:
    gen(capsys, "--name", "k", "--default")
    save_file({"w": torch.randn(3_000_000)}, str(cwd / "big.safetensors"))
    ok(capsys, "seal", "big.safetensors", "-o", "x.sealed")
    data = bytearray((cwd / "x.sealed").read_bytes())
    data[int(len(data) * 0.9)] ^= 1
    (cwd / "x.sealed").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "unseal", "x.sealed", "-o", "out.safetensors")
    assert code == cli.EXIT_INTEGRITY and err.startswith("sealedckpt: error: ")
    assert sorted(os.listdir(cwd)) == ["big.safetensors", "m.safetensors", "x.sealed"]


# --- item 13: public text is shown escaped ---------------------------------------------------------


def test_inspect_and_verify_escape_metadata(capsys: Capsys, cwd: Path) -> None:
    gen(capsys, "--name", "k", "--default")
    gen(capsys, "--name", "s", "--kind", "signing")
    ok(capsys, "seal", "m.safetensors", "-o", "x.sealed", "--sign", "s", "--meta", f"model={EVIL}",
       "--meta", "n\x1b[1m=v")  # fmt: skip
    for argv in (["inspect", "x.sealed"], ["verify", "x.sealed"]):
        out = ok(capsys, *argv)
        assert f"model = {EVIL_SHOWN}" in out and "n\\x1b[1m = v" in out, out
        assert not any(c in out for c in "\x1b\x07\x9b\u202e\u2066\r"), out
        data = json.loads(ok(capsys, *argv, "--json"))
        assert data["metadata"] == {"model": EVIL, "n\x1b[1m": "v"}  # JSON: exact


def test_error_messages_and_paths_escaped(capsys: Capsys, cwd: Path) -> None:
    gen(capsys, "--name", "k", "--default")
    name = f"x{EVIL}.sealed"
    code, _, err = run_cli(capsys, "inspect", name)
    assert code == cli.EXIT_ERROR
    assert err.splitlines()[0] == f"sealedckpt: error: x{EVIL_SHOWN}.sealed: No such file or directory"
    d = cwd / "model"
    d.mkdir()
    save_file({"w": torch.ones(2)}, str(d / f"a{EVIL}.safetensors"))
    out = ok(capsys, "seal-dir", "model", "-o", "sealed")
    assert EVIL_SHOWN in out and "\x1b" not in out


# --- item 16: recursive rewrap; key rm refuses while files need the key ----------------------------


def test_rotation_recipe_loses_nothing(capsys: Capsys, cwd: Path) -> None:
    old = gen(capsys, "--name", "train", "--default")
    runs = cwd / "runs"
    (runs / "a" / "deep" / "er").mkdir(parents=True)
    paths = [runs / "top.sealed", runs / "a" / "x.sealed", runs / "a" / "deep" / "er" / "y.sealed"]
    for p in paths:
        ok(capsys, "seal", "m.safetensors", "-o", str(p))
    outside = cwd / "outside.sealed"
    ok(capsys, "seal", "m.safetensors", "-o", str(outside))
    (runs / "link.sealed").symlink_to(outside)
    (runs / "notes.txt").write_text("not sealed")

    code, out, err = run_cli(capsys, "key", "rm", "train", "--check", "runs", "--yes")
    assert code == cli.EXIT_ERROR and out == ""
    assert "3 sealed file(s) under runs still have a key slot for train" in err
    assert "sealedckpt: error: refusing to delete it: 3 sealed file(s) still need key 'train'" in err
    assert json.loads(ok(capsys, "key", "show", "train", "--json"))["id"] == old["id"]

    new = gen(capsys, "--name", "train-2")
    code, out, err = run_cli(capsys, "rewrap", "-r", "runs", "--key", "train-2", "--with", "train")
    assert code == 0, err
    assert sorted(out.splitlines()) == sorted(f"rewrapped {p.relative_to(cwd)}: key slots {new['id']}" for p in paths)
    assert f"sealedckpt: note: skipping symlink {Path('runs') / 'link.sealed'}" in err
    slots = json.loads(ok(capsys, "inspect", str(outside), "--json"))["key_slots"]
    assert [s["key_id"] for s in slots] == [old["id"]]  # the symlink's target was not touched

    code, out, err = run_cli(capsys, "key", "rm", "train", "--check", "runs", "--yes")
    assert code == 0 and out == f"removed key train ({old['id']})\n"
    assert "0 sealed file(s) under runs still have a key slot for train" in err
    for p in paths:
        ok(capsys, "unseal", str(p), "-o", str(cwd / "o.safetensors"))


def test_key_rm_force_and_rewrap_dir_without_r(capsys: Capsys, cwd: Path) -> None:
    gen(capsys, "--name", "k", "--default")
    (cwd / "d").mkdir()
    ok(capsys, "seal", "m.safetensors", "-o", "d/x.sealed")
    code, _, err = run_cli(capsys, "rewrap", "d", "--key", "k")
    assert code == cli.EXIT_USAGE
    assert err.splitlines() == [
        "sealedckpt: error: d is a directory",
        "hint: rewrap every *.sealed file under it with `sealedckpt rewrap -r d ...`",
    ]
    code, _, err = run_cli(capsys, "rewrap", "-r", "m.safetensors", "--key", "k")
    assert code != 0 and err.startswith("sealedckpt: error: m.safetensors: ")
    code, out, err = run_cli(capsys, "key", "rm", "k", "--check", "d", "--force", "--yes")
    assert out.startswith("removed key k ")
    assert code == 0 and "1 sealed file(s) under d still have a key slot for k" in err


def test_key_rm_check_recipient_key(capsys: Capsys, cwd: Path) -> None:
    """Recipient slots are anonymous: --check tries the key on them."""
    gen(capsys, "--name", "r", "--kind", "recipient")
    gen(capsys, "--name", "other", "--kind", "recipient")
    (cwd / "d").mkdir()
    ok(capsys, "seal", "m.safetensors", "-o", "d/mine.sealed", "--to", "r")
    ok(capsys, "seal", "m.safetensors", "-o", "d/theirs.sealed", "--to", "other")
    code, _, err = run_cli(capsys, "key", "rm", "r", "--check", "d", "--yes")
    assert code == cli.EXIT_ERROR
    assert f"sealed to r: {Path('d') / 'mine.sealed'}" in err and "theirs" not in err
    assert "1 sealed file(s) under d still have a key slot for r" in err
    ok(capsys, "rewrap", "d/mine.sealed", "--to", "other", "--with", "r")
    code, out, err = run_cli(capsys, "key", "rm", "r", "--check", "d", "--yes")
    assert code == 0 and out.startswith("removed key r ")
