"""Attacks on the CLI's user: planted key files, pickles smuggled through ``unseal``, terminal
escapes in public metadata. Each must fail closed, and say so on stderr."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import save_file

import sealedckpt
from sealedckpt import cli, container
from sealedckpt.crypto import textkeys
from sealedckpt.stores.keystore import Keystore

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> Path:
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.arange(4.0)}, str(tmp_path / "m.safetensors"))
    for argv in (["--name", "k", "--default"], ["--name", "pub", "--kind", "signing"],
                 ["--name", "team", "--kind", "recipient"]):  # fmt: skip
        assert run_cli(capsys, "key", "gen", *argv)[0] == 0
    return tmp_path


def _plant(cwd: Path, name: str, text: str) -> None:
    (cwd / name).write_text(text + "\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "signed.sealed", "--trust", "{}"],
        ["unseal", "signed.sealed", "-o", "o.safetensors", "--trust", "{}"],
        ["sign", "signed.sealed", "--key", "pub", "--trust", "{}"],
        ["seal", "m.safetensors", "-o", "new.sealed", "--to", "{}"],
        ["rewrap", "signed.sealed", "--to", "{}"],
        ["trust", "add", "friend", "{}"],
    ],
    ids=["verify", "unseal", "sign", "seal", "rewrap", "trust-add"],
)
@pytest.mark.parametrize("name", ["pub", "team", "unknown"])
def test_planted_key_file_never_used(capsys: Capsys, cwd: Path, argv: list[str], name: str) -> None:
    """A file named like a key (known or not) in the working directory is never read for a bare word."""
    attacker_sign, attacker_rcpt = sealedckpt.SigningKey.generate(), sealedckpt.RecipientKey.generate()
    ks = Keystore()
    sealedckpt.save({"w": torch.ones(2)}, cwd / "signed.sealed", key=ks.secret(ks.find("k")),
                    sign_with=attacker_sign)  # fmt: skip
    wants_recipient = "--to" in argv
    text = (
        textkeys.public_to_text(attacker_rcpt.public)
        if wants_recipient
        else textkeys.verify_key_to_text(attacker_sign.public)
    )
    _plant(cwd, name, text)
    before = (cwd / "signed.sealed").read_bytes()
    code, out, err = run_cli(capsys, *[a.format(name) for a in argv])
    assert "Traceback" not in out
    assert code == cli.EXIT_USAGE, err
    assert err.startswith("sealedckpt: error: ") and f"./{name}" in err, err
    assert "Traceback" not in err
    assert (cwd / "signed.sealed").read_bytes() == before
    assert not (cwd / "new.sealed").exists() and not (cwd / "o.safetensors").exists()
    assert "friend" not in json.dumps(json.loads(run_cli(capsys, "trust", "list", "--json")[1]))


class _Gadget:
    """Unpickling this would create PWNED in the working directory."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("proto", [0, 2, 4, 5])
def test_unseal_never_writes_a_pickle_payload(capsys: Capsys, cwd: Path, proto: int) -> None:
    """A sealed (validly encrypted) pickle: ``unseal`` refuses it and writes nothing."""
    payload = pickle.dumps({"w": _Gadget()}, protocol=proto)
    ks = Keystore()
    with open(cwd / "evil.sealed", "wb") as f:
        container.seal(f, len(payload), [memoryview(payload)], keys=[ks.secret(ks.find("k"))])
    code, out, err = run_cli(capsys, "unseal", "evil.sealed", "-o", "model.safetensors")
    assert code == cli.EXIT_FORMAT and out == "" and err.startswith("sealedckpt: error: ")
    assert not (cwd / "model.safetensors").exists() and not (cwd / "PWNED").exists()
    assert sorted(os.listdir(cwd)) == ["evil.sealed", "m.safetensors"]


ESCAPES = ["\x1b]52;c;cm0gLXJmIH4=\x07", "\x1b[1A\x1b[2K[trusted]", "\u202etxt.exe", "\x9b2J", "\x1bP+q\x1b\\"]


@pytest.mark.parametrize("value", ESCAPES, ids=["osc52", "csi-overwrite", "rlo", "c1-csi", "dcs"])
def test_metadata_escapes_never_reach_the_terminal(capsys: Capsys, cwd: Path, value: str) -> None:
    assert (
        run_cli(capsys, "seal", "m.safetensors", "-o", "x.sealed", "--sign", "pub", "--meta", f"model={value}")[0] == 0
    )
    for argv in (["inspect", "x.sealed"], ["verify", "x.sealed"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0
        for c in value:
            if not c.isprintable():
                assert c not in out + err, (argv, repr(c))
        assert json.loads(run_cli(capsys, *argv, "--json")[1])["metadata"]["model"] == value
    code, out, err = run_cli(capsys, "verify", "x.sealed", "--model", "other")
    assert code != 0 and all(c not in err for c in value if not c.isprintable())
