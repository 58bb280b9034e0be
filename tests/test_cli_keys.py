"""CLI transcripts for the keystore commands and seal / unseal / rewrap: argv, stdout, stderr, exit code.

Every test runs against the isolated keystore of conftest.py (``SEALEDCKPT_HOME`` in a temp dir,
``SEALEDCKPT_KEYSTORE=file``). Passphrases only ever travel through ``--passphrase-file``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import last_signature, run_cli
from safetensors.torch import load_file, save_file

import sealedckpt
from sealedckpt import cli
from sealedckpt.crypto import RecipientKey, textkeys

Capsys = pytest.CaptureFixture[str]

TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3, dtype=torch.float16)}


run = run_cli


def ok(capsys: Capsys, *argv: str) -> str:
    """Run a command that must succeed with nothing on stderr; return its stdout."""
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, ""), (argv, code, err)
    return out


def gen(capsys: Capsys, *args: str) -> dict[str, Any]:
    """``key gen ... --json`` -> the record."""
    rec: dict[str, Any] = json.loads(ok(capsys, "key", "gen", "--json", *args))
    return rec


def error_lines(err: str) -> list[str]:
    return err.splitlines()


def assert_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor] = TENSORS) -> None:
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


@pytest.fixture
def home() -> Path:
    return Path(os.environ["SEALEDCKPT_HOME"])


@pytest.fixture
def st(tmp_path: Path) -> Path:
    p = tmp_path / "model.safetensors"
    save_file(TENSORS, str(p))
    return p


@pytest.fixture
def ppfile(tmp_path: Path) -> Path:
    p = tmp_path / "pp.txt"
    p.write_text("correct horse battery staple\n", encoding="utf-8")
    return p


def typo(text: str, i: int = 20) -> str:
    """The same key with exactly ONE character changed (to another valid Bech32 character)."""
    return text[:i] + ("q" if text[i] != "q" else "p") + text[i + 1 :]


# --- key gen ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symmetric", "recipient", "signing"])
def test_key_gen_each_kind(capsys: Capsys, home: Path, kind: str) -> None:
    code, out, err = run(capsys, "key", "gen", "--kind", kind, "--name", f"k-{kind}")
    assert code == 0 and err == ""
    lines = out.splitlines()
    # the first key of a kind becomes its default even without --default
    assert lines[0].startswith(f"generated {kind} key k-{kind} (id ") and lines[0].endswith(
        ") in the file store, default"
    )
    key_id = lines[0].split("(id ")[1].split(")")[0]
    assert len(key_id) == 16 and (home / "keys" / f"{key_id}.key").is_file()
    if kind == "symmetric":
        assert len(lines) == 1  # no public half
    else:
        prefix = "sckpt1" if kind == "recipient" else "sckpt-vk1"
        assert len(lines) == 2 and lines[1].startswith(f"public key: {prefix}")
        textkeys.public_from_text(lines[1].removeprefix("public key: "))  # checksum is valid
    assert "SCKPT-" not in out  # never prints the secret


def test_key_gen_json_and_default(capsys: Capsys) -> None:
    first = gen(capsys, "--name", "first")
    assert set(first) == {"id", "name", "kind", "created", "store", "public", "default", "retired", "replaced_by",
                          "protected"}  # fmt: skip
    assert first["kind"] == "symmetric" and first["default"] is True and first["store"] == "file"
    assert first["public"] is None and first["retired"] is False and first["protected"] is False
    second = gen(capsys, "--name", "second")
    assert second["default"] is False
    third = gen(capsys, "--name", "third", "--default")
    assert third["default"] is True
    listed = {r["name"]: r["default"] for r in json.loads(ok(capsys, "key", "list", "--json"))}
    assert listed == {"first": False, "second": False, "third": True}


def test_key_gen_name_clash(capsys: Capsys) -> None:
    gen(capsys, "--name", "dup")
    code, out, err = run(capsys, "key", "gen", "--name", "dup", "--kind", "signing")
    assert code == cli.EXIT_KEY and out == ""
    assert err == "sealedckpt: error: a key named 'dup' already exists\n"
    assert [r["name"] for r in json.loads(ok(capsys, "key", "list", "--json"))] == ["dup"]


def test_key_gen_bad_name_and_kind(capsys: Capsys) -> None:
    code, out, err = run(capsys, "key", "gen", "--name", "bad name")
    assert code == cli.EXIT_KEY and out == "" and err.startswith("sealedckpt: error: invalid key name 'bad name'")
    code, out, err = run(capsys, "key", "gen", "--kind", "rsa")
    assert code == cli.EXIT_USAGE and out == "" and "invalid choice: 'rsa'" in err


def test_key_gen_passphrase_protect(capsys: Capsys, home: Path, ppfile: Path, st: Path, tmp_path: Path) -> None:
    code, out, err = run(capsys, "key", "gen", "--name", "locked", "--passphrase-protect",
                         "--passphrase-file", str(ppfile))  # fmt: skip
    assert code == 0 and err == ""
    assert out.startswith("generated symmetric key locked (id ")
    rec = json.loads(ok(capsys, "key", "show", "locked", "--json"))
    assert rec["protected"] is True
    stored = (home / "keys" / f"{rec['id']}.key").read_text(encoding="ascii")
    assert stored.startswith("sealedckpt-protected-v1:") and "SCKPT-" not in stored
    assert ok(capsys, "key", "list").split() == [rec["id"], "symmetric", "locked", "file", "default", "protected"]
    # using it needs the passphrase: from --passphrase-file it works, without one it is a key failure
    sealed = tmp_path / "m.sealed"
    out = ok(capsys, "seal", str(st), "-o", str(sealed), "--key", "locked", "--passphrase-file", str(ppfile))
    assert f"key slots {rec['id']}" in out
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n", encoding="utf-8")
    code, out, err = run(capsys, "unseal", str(sealed), "-o", str(tmp_path / "o.st"), "--key", "locked",
                         "--passphrase-file", str(wrong))  # fmt: skip
    assert code == cli.EXIT_KEY and out == "" and err == "sealedckpt: error: wrong passphrase for key 'locked'\n"
    assert not (tmp_path / "o.st").exists()


def test_key_gen_passphrase_protect_empty_passphrase(capsys: Capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    code, out, err = run(capsys, "key", "gen", "--passphrase-protect", "--passphrase-file", str(empty))
    assert code == cli.EXIT_USAGE and out == "" and err == "sealedckpt: error: empty passphrase\n"
    assert json.loads(ok(capsys, "key", "list", "--json")) == []


# --- key list / show / export-public ----------------------------------------------------------------


def test_key_list_empty(capsys: Capsys) -> None:
    code, out, err = run(capsys, "key", "list")
    assert code == 0 and out == ""
    assert err == "no keys\nhint: create one with `sealedckpt key gen --default`\n"
    code, out, err = run(capsys, "key", "list", "--json")
    assert code == 0 and json.loads(out) == [] and err == ""


def test_key_list_text_and_json(capsys: Capsys) -> None:
    sym = gen(capsys, "--name", "sym")
    rcp = gen(capsys, "--name", "rcp", "--kind", "recipient")
    out = ok(capsys, "key", "list")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == [sym["id"], "symmetric", "sym", "file", "default"]
    assert rows[1] == [rcp["id"], "recipient", "rcp", "file", "default"]
    assert len(rows) == 2
    assert "SCKPT-" not in out
    doc = json.loads(ok(capsys, "key", "list", "--json"))
    assert [(r["name"], r["kind"], r["default"]) for r in doc] == [
        ("sym", "symmetric", True),
        ("rcp", "recipient", True),
    ]
    assert doc[1]["public"] == rcp["public"] and doc[0]["public"] is None


def test_key_show_by_name_id_and_prefix(capsys: Capsys) -> None:
    rec = gen(capsys, "--name", "signer", "--kind", "signing")
    other = gen(capsys, "--name", "other")
    by_name = ok(capsys, "key", "show", "signer")
    assert by_name.splitlines() == [
        f"id           {rec['id']}",
        "name         signer",
        "kind         signing",
        f"created      {rec['created']}",
        "store        file",
        f"public       {rec['public']}",
        "default      True",
    ]
    assert ok(capsys, "key", "show", rec["id"]) == by_name
    # a unique prefix of 4+ hex digits (pick one that does not also prefix the other key)
    n = next(n for n in range(4, 17) if not other["id"].startswith(rec["id"][:n]))
    assert ok(capsys, "key", "show", rec["id"][:n]) == by_name
    assert json.loads(ok(capsys, "key", "show", rec["id"][:n], "--json")) == rec


def test_key_show_unknown(capsys: Capsys, home: Path) -> None:
    gen(capsys, "--name", "present")
    code, out, err = run(capsys, "key", "show", "absent")
    assert code == cli.EXIT_KEY and out == ""
    assert error_lines(err) == [
        f"sealedckpt: error: no key named 'absent' in {home}",
        "hint: list keys with `sealedckpt key list`",
    ]
    code, out, err = run(capsys, "key", "show", "absent", "--json")
    assert code == cli.EXIT_KEY
    assert json.loads(out) == {"ok": False, "error": f"no key named 'absent' in {home}", "kind": "KeystoreError",
                               "exit_code": 6}  # fmt: skip
    assert err.startswith("sealedckpt: error: no key named 'absent'") and "hint: list keys" in err


def test_key_export_public(capsys: Capsys) -> None:
    rcp = gen(capsys, "--name", "rcp", "--kind", "recipient")
    sig = gen(capsys, "--name", "sig", "--kind", "signing")
    assert ok(capsys, "key", "export-public", "rcp") == rcp["public"] + "\n"
    assert rcp["public"].startswith("sckpt1")
    assert ok(capsys, "key", "export-public", sig["id"]) == sig["public"] + "\n"
    assert sig["public"].startswith("sckpt-vk1")


def test_key_export_public_symmetric_refused(capsys: Capsys) -> None:
    gen(capsys, "--name", "sym")
    code, out, err = run(capsys, "key", "export-public", "sym")
    assert code == cli.EXIT_USAGE and out == ""
    assert error_lines(err) == [
        "sealedckpt: error: key 'sym' is symmetric: it has no public half",
        "hint: share symmetric keys only through a secret channel",
    ]


# --- key import --------------------------------------------------------------------------------------


def test_key_import_secret_from_file(capsys: Capsys, tmp_path: Path, home: Path) -> None:
    key = sealedckpt.SymmetricKey.generate()
    f = tmp_path / "shared.key"
    f.write_text(textkeys.secret_to_text(key) + "\n", encoding="ascii")
    code, out, err = run(capsys, "key", "import", "shared", str(f))
    assert (code, err) == (0, "")
    assert out == f"imported symmetric key shared (id {key.key_id})\n"
    assert (home / "keys" / f"{key.key_id}.key").read_text(encoding="ascii").strip() == textkeys.secret_to_text(key)
    # the only symmetric key: it is the default, so `seal` without --key uses it
    assert json.loads(ok(capsys, "key", "show", "shared", "--json"))["default"] is True


def test_key_import_secret_from_stdin(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    ident = RecipientKey.generate()
    monkeypatch.setattr("sys.stdin", io.StringIO(textkeys.secret_to_text(ident) + "\n"))
    code, out, err = run(capsys, "key", "import", "bob")
    assert (code, err) == (0, "")
    assert out == f"imported recipient key bob (id {ident.key_id})\n"
    rec = json.loads(ok(capsys, "key", "show", "bob", "--json"))
    assert rec["public"] == textkeys.public_to_text(ident.public) and rec["store"] == "file"
    monkeypatch.setattr("sys.stdin", io.StringIO(textkeys.secret_to_text(sealedckpt.SigningKey.generate())))
    code, out, err = run(capsys, "key", "import", "sig", "-", "--default")
    assert (code, err) == (0, "") and out.startswith("imported signing key sig (id ")


@pytest.mark.parametrize("kind", ["recipient", "verify"])
def test_key_import_public_only(capsys: Capsys, tmp_path: Path, home: Path, kind: str) -> None:
    pub = RecipientKey.generate().public if kind == "recipient" else sealedckpt.SigningKey.generate().public
    f = tmp_path / "k.pub"
    f.write_text(textkeys.public_to_text(pub) + "\n", encoding="ascii")
    code, out, err = run(capsys, "key", "import", "pal", str(f))
    want_kind = "recipient" if kind == "recipient" else "signing"
    assert (code, err) == (0, "")
    assert out == f"imported {want_kind} key pal (id {pub.key_id}), public only\n"
    assert not (home / "keys" / f"{pub.key_id}.key").exists()
    assert ok(capsys, "key", "list").split() == [pub.key_id, want_kind, "pal", "none", "public-only"]
    # a public-only key cannot be the default
    code, out, err = run(capsys, "key", "default", "pal")
    assert code == cli.EXIT_KEY and out == ""
    assert err == "sealedckpt: error: key 'pal' cannot be the default (retired or public only)\n"


@pytest.mark.parametrize("what", ["recipient", "verify", "secret"])
def test_key_import_one_character_changed(capsys: Capsys, tmp_path: Path, what: str) -> None:
    ident = RecipientKey.generate()
    text = {
        "recipient": textkeys.public_to_text(ident.public),
        "verify": textkeys.public_to_text(sealedckpt.SigningKey.generate().public),
        "secret": textkeys.secret_to_text(ident).lower(),  # lower case keeps the swap single-case
    }[what]
    bad = typo(text)
    assert len(bad) == len(text) and sum(a != b for a, b in zip(bad, text, strict=True)) == 1
    f = tmp_path / "pasted.txt"
    f.write_text(bad + "\n", encoding="ascii")
    code, out, err = run(capsys, "key", "import", "pasted", str(f))
    assert code == cli.EXIT_USAGE and out == ""
    assert error_lines(err) == [
        "sealedckpt: error: cannot import: checksum mismatch: the key was mistyped or altered",
        "hint: keys look like sckpt1..., sckpt-vk1... or SCKPT-...-KEY-1...",
    ]
    assert json.loads(ok(capsys, "key", "list", "--json")) == []


@pytest.mark.parametrize("garbage", ["hello world", "", "sckpt1", "SCKPT-SYMMETRIC-KEY-1QQQQ"])
def test_key_import_garbage(capsys: Capsys, monkeypatch: pytest.MonkeyPatch, garbage: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(garbage))
    code, out, err = run(capsys, "key", "import", "junk", "-")
    assert code == cli.EXIT_USAGE and out == ""
    lines = error_lines(err)
    assert len(lines) == 2 and lines[0].startswith("sealedckpt: error: cannot import: ")
    assert lines[1] == "hint: keys look like sckpt1..., sckpt-vk1... or SCKPT-...-KEY-1..."
    assert json.loads(ok(capsys, "key", "list", "--json")) == []


def test_key_import_twice_and_missing_file(capsys: Capsys, tmp_path: Path) -> None:
    key = sealedckpt.SymmetricKey.generate()
    f = tmp_path / "k.key"
    f.write_text(textkeys.secret_to_text(key), encoding="ascii")
    ok(capsys, "key", "import", "once", str(f))
    code, out, err = run(capsys, "key", "import", "twice", str(f))
    assert code == cli.EXIT_KEY and out == ""
    assert err == f"sealedckpt: error: this key is already stored (id {key.key_id})\n"
    code, out, err = run(capsys, "key", "import", "x", str(tmp_path / "absent.key"))
    assert code == cli.EXIT_ERROR and out == "" and "No such file or directory" in err


# --- key rm / rotate / default ---------------------------------------------------------------------


def test_key_rm_yes(capsys: Capsys, home: Path) -> None:
    rec = gen(capsys, "--name", "doomed")
    secret_file = home / "keys" / f"{rec['id']}.key"
    assert secret_file.is_file()
    code, out, err = run(capsys, "key", "rm", "doomed", "--yes")
    assert (code, err) == (0, "")
    assert out == f"removed key doomed ({rec['id']})\n"
    assert not secret_file.exists()
    assert json.loads(ok(capsys, "key", "list", "--json")) == []
    code, out, err = run(capsys, "key", "rm", "doomed", "--yes")
    assert code == cli.EXIT_KEY and out == "" and err.startswith("sealedckpt: error: no key named 'doomed'")


def test_key_rm_without_yes_non_tty(capsys: Capsys, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = gen(capsys, "--name", "keepme")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a tty: the "y" must NOT be read as consent
    code, out, err = run(capsys, "key", "rm", "keepme")
    assert code == cli.EXIT_USAGE and out == ""
    assert err == "sealedckpt: error: refusing to delete key 'keepme' without --yes\n"
    assert (home / "keys" / f"{rec['id']}.key").is_file()


def test_key_rotate(capsys: Capsys, home: Path) -> None:
    old = gen(capsys, "--name", "team")
    code, out, err = run(capsys, "key", "rotate", "team")
    assert code == 0
    doc = {r["name"]: r for r in json.loads(ok(capsys, "key", "list", "--json"))}
    new_name = next(n for n in doc if n != "team")
    new = doc[new_name]
    assert new_name.startswith("team@") and new["kind"] == "symmetric"
    assert out == f"new symmetric key {new_name} (id {new['id']}) is now the default; team ({old['id']}) is retired\n"
    assert err == f"hint: re-wrap existing files with `sealedckpt rewrap FILES... --key {new_name}`\n"
    assert doc["team"]["retired"] is True and doc["team"]["replaced_by"] == new["id"]
    assert doc["team"]["default"] is False and new["default"] is True and new["retired"] is False
    assert (home / "keys" / f"{old['id']}.key").is_file()  # the old secret stays for old files
    rows = [line.split() for line in ok(capsys, "key", "list").splitlines()]
    assert rows == [[old["id"], "symmetric", "team", "file", "retired"],
                    [new["id"], "symmetric", new_name, "file", "default"]]  # fmt: skip
    # a retired key cannot be made the default again
    code, out, err = run(capsys, "key", "default", "team")
    assert code == cli.EXIT_KEY and out == "" and "cannot be the default" in err


def test_key_rotate_signing_has_no_rewrap_hint(capsys: Capsys) -> None:
    gen(capsys, "--name", "rel", "--kind", "signing")
    code, out, err = run(capsys, "key", "rotate", "rel")
    assert code == 0 and err == ""
    assert out.startswith("new signing key rel@") and out.rstrip().endswith("is retired")


def test_key_default(capsys: Capsys) -> None:
    a = gen(capsys, "--name", "a")
    b = gen(capsys, "--name", "b")
    assert a["default"] and not b["default"]
    code, out, err = run(capsys, "key", "default", "b")
    assert (code, err) == (0, "") and out == f"b ({b['id']}) is the default symmetric key\n"
    doc = {r["name"]: r["default"] for r in json.loads(ok(capsys, "key", "list", "--json"))}
    assert doc == {"a": False, "b": True}
    code, out, err = run(capsys, "key", "default", "zzz")
    assert code == cli.EXIT_KEY and out == "" and "hint: list keys with `sealedckpt key list`" in err


# --- seal --------------------------------------------------------------------------------------------


def test_seal_default_key(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    rec = gen(capsys, "--default")
    out_path = tmp_path / "m.sealed"
    code, out, err = run(capsys, "seal", str(st), "-o", str(out_path))
    assert (code, err) == (0, "")
    size = out_path.stat().st_size
    assert out == f"sealed {st} -> {out_path} ({size:,} bytes; key slots {rec['id']})\n"
    assert_tensors(sealedckpt.load(out_path))


def test_seal_without_any_key(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    code, out, err = run(capsys, "seal", str(st), "-o", str(tmp_path / "m.sealed"))
    assert code == cli.EXIT_KEY and out == ""
    assert error_lines(err) == [
        "sealedckpt: error: no key given and no default key is set",
        "hint: create one with `sealedckpt key gen --default`, set SEALEDCKPT_KEY, "
        "or pass a key (--key NAME; key= in Python)",
    ]
    assert not (tmp_path / "m.sealed").exists()


def test_seal_with_named_keys(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "dflt")
    a = gen(capsys, "--name", "a")
    b = gen(capsys, "--name", "b")
    p = tmp_path / "m.sealed"
    out = ok(capsys, "seal", str(st), "-o", str(p), "--key", "a", "--key", b["id"])
    assert out.endswith(f"; key slots {a['id']}, {b['id']})\n")
    info = json.loads(ok(capsys, "inspect", str(p), "--json"))
    assert [s["key_id"] for s in info["key_slots"]] == [a["id"], b["id"]]
    code, out, err = run(capsys, "seal", str(st), "-o", str(tmp_path / "n.sealed"), "--key", "nope")
    assert code == cli.EXIT_KEY and out == "" and err.startswith("sealedckpt: error: no key named 'nope'")


def test_seal_key_must_be_symmetric(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "rcp", "--kind", "recipient")
    code, out, err = run(capsys, "seal", str(st), "-o", str(tmp_path / "m.sealed"), "--key", "rcp")
    assert code == cli.EXIT_USAGE and out == ""
    assert err == "sealedckpt: error: --key rcp: not a symmetric key (use --to for recipients)\n"


def test_seal_to_pubkey_text_and_name(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    alice = gen(capsys, "--name", "alice", "--kind", "recipient")
    bob = RecipientKey.generate()
    bob_pub = textkeys.public_to_text(bob.public)
    p = tmp_path / "m.sealed"
    out = ok(capsys, "seal", str(st), "-o", str(p), "--to", bob_pub, "--to", "alice")
    assert out.endswith(f"; key slots {bob.key_id}, {alice['id']})\n")
    # bob opens it with an identity file; alice through the keystore, without naming a key
    ident = tmp_path / "bob.key"
    ident.write_text(textkeys.secret_to_text(bob) + "\n", encoding="ascii")
    o1, o2 = tmp_path / "o1.safetensors", tmp_path / "o2.safetensors"
    assert ok(capsys, "unseal", str(p), "-o", str(o1), "--identity", str(ident)).startswith(f"unsealed {p} -> {o1}")
    assert ok(capsys, "unseal", str(p), "-o", str(o2)).startswith(f"unsealed {p} -> {o2}")
    assert_tensors(load_file(str(o1)))
    assert o1.read_bytes() == o2.read_bytes()


def test_seal_to_errors(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "sig", "--kind", "signing")
    o = str(tmp_path / "m.sealed")
    code, out, err = run(capsys, "seal", str(st), "-o", o, "--to", "sig")
    assert code == cli.EXIT_USAGE and out == "" and err == "sealedckpt: error: --to sig: not a recipient public key\n"
    pub = textkeys.public_to_text(RecipientKey.generate().public)
    code, out, err = run(capsys, "seal", str(st), "-o", o, "--to", typo(pub))
    assert code == cli.EXIT_USAGE and out == "" and "checksum" in err
    code, out, err = run(capsys, "seal", str(st), "-o", o, "--to", "nobody")
    assert code == cli.EXIT_USAGE and out == ""
    assert error_lines(err) == [
        "sealedckpt: error: not a public key, a file or a key name: 'nobody'",
        "hint: public keys look like sckpt1..., sckpt1pq1... (recipients), sckpt-vk1... or sckpt-pqvk1... (signers)",
    ]
    assert not Path(o).exists()


def test_seal_and_unseal_passphrase(capsys: Capsys, st: Path, tmp_path: Path, ppfile: Path) -> None:
    p = tmp_path / "m.sealed"
    out = ok(capsys, "seal", str(st), "-o", str(p), "--passphrase", "--passphrase-file", str(ppfile),
             "--work-factor", "10")  # fmt: skip
    assert out.endswith("; key slots passphrase)\n")
    o = tmp_path / "o.safetensors"
    out = ok(capsys, "unseal", str(p), "-o", str(o), "--passphrase", "--passphrase-file", str(ppfile))
    assert out == f"unsealed {p} -> {o} ({o.stat().st_size:,} bytes, plain safetensors)\n"
    assert_tensors(load_file(str(o)))


def test_seal_passphrase_from_stdin(capsys: Capsys, st: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "m.sealed"
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    ok(capsys, "seal", str(st), "-o", str(p), "--passphrase", "--passphrase-file", "-", "--work-factor", "10")
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    o = tmp_path / "o.safetensors"
    ok(capsys, "unseal", str(p), "-o", str(o), "--passphrase", "--passphrase-file", "-")
    assert_tensors(load_file(str(o)))


def test_seal_passphrase_mixed_with_key(capsys: Capsys, st: Path, tmp_path: Path, ppfile: Path) -> None:
    gen(capsys, "--name", "k")
    o = tmp_path / "m.sealed"
    code, out, err = run(capsys, "seal", str(st), "-o", str(o), "--passphrase", "--key", "k",
                         "--passphrase-file", str(ppfile), "--work-factor", "10")  # fmt: skip
    assert code == cli.EXIT_USAGE and out == ""
    assert err == "sealedckpt: error: a passphrase must be the only key of a file (like age)\n"
    assert not o.exists()


def test_seal_sign_meta_json(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    sym = gen(capsys, "--name", "k")
    sig = gen(capsys, "--name", "rel", "--kind", "signing")
    p = tmp_path / "m.sealed"
    code, out, err = run(capsys, "seal", str(st), "-o", str(p), "--sign", "rel", "--meta", "model=tiny",
                         "--meta", "note=a=b", "--meta", "empty=", "--json")  # fmt: skip
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["output"] == str(p) and doc["key_slots"] == [sym["id"]] and doc["signers"] == [sig["id"]]
    assert doc["bytes"] == p.stat().st_size and doc["content_digest"].startswith("blake3:")
    info = json.loads(ok(capsys, "inspect", str(p), "--json"))
    assert info["metadata"] == {"model": "tiny", "note": "a=b", "empty": ""}
    assert [s["key_id"] for s in info["signatures"]] == [sig["id"]]
    ver = json.loads(ok(capsys, "verify", str(p), "--trust", "rel", "--json"))
    assert ver["content_digest"] == doc["content_digest"] and ver["signers"][0]["trusted"] is True
    # text output of a signed seal
    out = ok(capsys, "seal", str(st), "-o", str(tmp_path / "t.sealed"), "--sign", sig["id"])
    assert out.endswith(f"; key slots {sym['id']}; signed by {sig['id']})\n")


def test_seal_sign_with_non_signing_key(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    code, out, err = run(capsys, "seal", str(st), "-o", str(tmp_path / "m.sealed"), "--sign", "k")
    assert code == cli.EXIT_USAGE and out == "" and err == "sealedckpt: error: --sign k: not a signing key\n"


@pytest.mark.parametrize("bad", ["novalue", "=v"])
def test_seal_malformed_meta(capsys: Capsys, st: Path, tmp_path: Path, bad: str) -> None:
    gen(capsys, "--name", "k")
    o = tmp_path / "m.sealed"
    code, out, err = run(capsys, "seal", str(st), "-o", str(o), "--meta", bad)
    assert code == cli.EXIT_USAGE and out == ""
    assert err == f"sealedckpt: error: --meta takes KEY=VALUE, got {bad!r}\n"
    assert not o.exists()
    code, out, err = run(capsys, "seal", str(st), "-o", str(o), "--meta", bad, "--json")
    assert code == cli.EXIT_USAGE and json.loads(out)["exit_code"] == 2 and "--meta takes KEY=VALUE" in err


def test_seal_already_sealed(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    p = tmp_path / "m.sealed"
    ok(capsys, "seal", str(st), "-o", str(p))
    o = tmp_path / "again.sealed"
    code, out, err = run(capsys, "seal", str(p), "-o", str(o))
    assert code == cli.EXIT_FORMAT and out == ""
    assert error_lines(err) == [
        f"sealedckpt: error: {p} is already sealed",
        "hint: use `sealedckpt rewrap` to change its keys",
    ]
    assert not o.exists()


def test_seal_pickle_refused(capsys: Capsys, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    src = tmp_path / "legacy.pt"
    torch.save(TENSORS, src)
    o = tmp_path / "legacy.sealed"
    code, out, err = run(capsys, "seal", str(src), "-o", str(o))
    assert code == cli.EXIT_FORMAT and out == ""
    lines = error_lines(err)
    assert lines[0] == (f"sealedckpt: error: {src} is a pickle-based file (torch.save, TorchScript or legacy); "
                        "refusing to unpickle it")  # fmt: skip
    assert len(lines) == 2 and lines[1].startswith("hint: ") and "--allow-pickle" in lines[1]
    assert not o.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["legacy.pt"]  # no temp file left behind either


def test_seal_allow_pickle(capsys: Capsys, tmp_path: Path) -> None:
    rec = gen(capsys, "--name", "k")
    src = tmp_path / "legacy.pt"
    torch.save(TENSORS, src)
    o = tmp_path / "legacy.sealed"
    code, out, err = run(capsys, "seal", str(src), "-o", str(o), "--allow-pickle")
    assert code == 0
    assert err == (f"sealedckpt: warning: unpickling {src} (weights_only=True) because of --allow-pickle; "
                   "do this only for files you trust\n")  # fmt: skip
    assert out == f"sealed {src} -> {o} ({o.stat().st_size:,} bytes; key slots {rec['id']})\n"
    assert_tensors(sealedckpt.load(o))


def test_seal_detects_safetensors_by_content(capsys: Capsys, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    src = tmp_path / "x.pt"  # the name lies: it is a plain safetensors file
    save_file(TENSORS, str(src))
    o = tmp_path / "x.sealed"
    code, out, err = run(capsys, "seal", str(src), "-o", str(o))
    assert (code, err) == (0, "")  # no unpickling warning: it was never treated as a pickle
    assert out.startswith(f"sealed {src} -> {o} (")
    assert_tensors(sealedckpt.load(o))
    u = tmp_path / "u.safetensors"
    ok(capsys, "unseal", str(o), "-o", str(u))
    assert_tensors(load_file(str(u)))


def test_seal_safetensors_with_128_byte_header(capsys: Capsys, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    src = tmp_path / "model.safetensors"
    save_file({"b": torch.zeros(256), "w": torch.ones(256, 256)}, str(src))
    assert src.read_bytes()[:8] == (128).to_bytes(8, "little")
    o = tmp_path / "m.sealed"
    code, out, err = run(capsys, "seal", str(src), "-o", str(o))
    assert (code, err) == (0, "") and out.startswith(f"sealed {src} -> {o} (")


def test_seal_missing_input(capsys: Capsys, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    code, out, err = run(capsys, "seal", str(tmp_path / "absent"), "-o", str(tmp_path / "o"))
    assert code == cli.EXIT_ERROR and out == "" and "No such file or directory" in err


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "notes.txt"
    p.write_text("hello world, this is not a checkpoint\n", encoding="utf-8")
    return p


def test_seal_unknown_content_allow_pickle(capsys: Capsys, tmp_path: Path, text_file: Path) -> None:
    gen(capsys, "--name", "k")
    o = tmp_path / "o.sealed"
    code, out, err = run(capsys, "seal", str(text_file), "-o", str(o), "--allow-pickle")
    assert code == cli.EXIT_FORMAT and out == "" and "not a safetensors or torch checkpoint file" in err
    assert "warning: unpickling" not in err  # unknown content is never handed to torch.load
    assert not o.exists()


def test_seal_unknown_content_message(capsys: Capsys, tmp_path: Path, text_file: Path) -> None:
    gen(capsys, "--name", "k")
    o = tmp_path / "o.sealed"
    code, out, err = run(capsys, "seal", str(text_file), "-o", str(o))
    assert code == cli.EXIT_FORMAT and out == "" and not o.exists()
    assert err.startswith(f"sealedckpt: error: {text_file}: not a safetensors or torch checkpoint file")
    assert "pickle" not in err and len(err.splitlines()) == 1


def test_protected_default_key_uses_passphrase_file(capsys: Capsys, st: Path, tmp_path: Path, ppfile: Path) -> None:
    ok(capsys, "key", "gen", "--name", "locked", "--default", "--passphrase-protect", "--passphrase-file", str(ppfile))
    p = tmp_path / "m.sealed"
    code, out, err = run(capsys, "seal", str(st), "-o", str(p), "--passphrase-file", str(ppfile))
    assert (code, err) == (0, "") and out.startswith(f"sealed {st} -> {p} (")
    o = tmp_path / "o.safetensors"
    code, out, err = run(capsys, "unseal", str(p), "-o", str(o), "--passphrase-file", str(ppfile))
    assert (code, err) == (0, "") and out.startswith(f"unsealed {p} -> {o} (")


# --- unseal ------------------------------------------------------------------------------------------


@pytest.fixture
def signed_file(capsys: Capsys, st: Path, tmp_path: Path) -> Path:
    gen(capsys, "--name", "k")
    gen(capsys, "--name", "rel", "--kind", "signing")
    p = tmp_path / "signed.sealed"
    ok(capsys, "seal", str(st), "-o", str(p), "--sign", "rel", "--meta", "model=tiny")
    return p


def test_unseal_roundtrip(capsys: Capsys, signed_file: Path, tmp_path: Path, st: Path) -> None:
    o = tmp_path / "out.safetensors"
    code, out, err = run(capsys, "unseal", str(signed_file), "-o", str(o))
    assert (code, err) == (0, "")
    assert out == f"unsealed {signed_file} -> {o} ({o.stat().st_size:,} bytes, plain safetensors)\n"
    assert_tensors(load_file(str(o)))


def test_unseal_trust(capsys: Capsys, signed_file: Path, tmp_path: Path) -> None:
    o = tmp_path / "out.safetensors"
    ok(capsys, "unseal", str(signed_file), "-o", str(o), "--trust", "rel")
    assert_tensors(load_file(str(o)))
    o.unlink()
    stranger = textkeys.public_to_text(sealedckpt.SigningKey.generate().public)
    rel_id = json.loads(ok(capsys, "key", "show", "rel", "--json"))["id"]
    code, out, err = run(capsys, "unseal", str(signed_file), "-o", str(o), "--trust", stranger)
    assert code == cli.EXIT_SIGNATURE and out == ""
    assert err == f"sealedckpt: error: signed only by untrusted keys ({rel_id})\n"
    assert not o.exists()


def test_unseal_trust_unsigned_file(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    gen(capsys, "--name", "rel", "--kind", "signing")
    p = tmp_path / "u.sealed"
    ok(capsys, "seal", str(st), "-o", str(p))
    o = tmp_path / "o.safetensors"
    code, out, err = run(capsys, "unseal", str(p), "-o", str(o), "--trust", "rel")
    assert code == cli.EXIT_SIGNATURE and out == ""
    assert err == "sealedckpt: error: the file is not signed, but a trusted signature is required\n"
    assert not o.exists()


def test_unseal_identity_file(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    ident = RecipientKey.generate()
    p = tmp_path / "m.sealed"
    ok(capsys, "seal", str(st), "-o", str(p), "--to", textkeys.public_to_text(ident.public))
    o = tmp_path / "o.safetensors"
    # the keystore is empty: without the identity there is no key
    code, out, err = run(capsys, "unseal", str(p), "-o", str(o))
    assert code == cli.EXIT_KEY and out == "" and err.startswith("sealedckpt: error: no key given")
    assert not o.exists()
    f = tmp_path / "id.key"
    f.write_text(textkeys.secret_to_text(ident) + "\n", encoding="ascii")
    out = ok(capsys, "unseal", str(p), "-o", str(o), "--identity", str(f))
    assert out.startswith(f"unsealed {p} -> {o} (")
    assert_tensors(load_file(str(o)))
    # a signing key is no identity
    s = tmp_path / "sig.key"
    s.write_text(textkeys.secret_to_text(sealedckpt.SigningKey.generate()), encoding="ascii")
    code, out, err = run(capsys, "unseal", str(p), "-o", str(tmp_path / "x"), "--identity", str(s))
    assert code == cli.EXIT_USAGE and out == ""
    assert err == f"sealedckpt: error: --identity {s}: a signing key cannot open files\n"


def test_unseal_wrong_passphrase(capsys: Capsys, st: Path, tmp_path: Path, ppfile: Path) -> None:
    p = tmp_path / "m.sealed"
    ok(capsys, "seal", str(st), "-o", str(p), "--passphrase", "--passphrase-file", str(ppfile), "--work-factor", "10")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("Correct horse battery staple\n", encoding="utf-8")
    o = tmp_path / "o.safetensors"
    code, out, err = run(capsys, "unseal", str(p), "-o", str(o), "--passphrase", "--passphrase-file", str(wrong))
    assert code == cli.EXIT_KEY and out == "" and err == "sealedckpt: error: wrong passphrase\n"
    assert not o.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.sealed", "model.safetensors", "pp.txt", "wrong.txt"]


def test_unseal_wrong_key(capsys: Capsys, signed_file: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "other")
    o = tmp_path / "o.safetensors"
    code, out, err = run(capsys, "unseal", str(signed_file), "-o", str(o), "--key", "other")
    assert code == cli.EXIT_KEY and out == ""
    assert err.startswith("sealedckpt: error: none of the 1 key(s) given opens this file")
    assert not o.exists()


def test_unseal_tampered(capsys: Capsys, signed_file: Path, tmp_path: Path) -> None:
    data = bytearray(signed_file.read_bytes())
    n = sealedckpt.inspect(io.BytesIO(bytes(data))).chunks
    data[last_signature(data)["block"] - 32 * n - 2 - 100] ^= 1  # inside the last encrypted chunk (before its tag)
    signed_file.write_bytes(bytes(data))
    o = tmp_path / "o.safetensors"
    code, out, err = run(capsys, "unseal", str(signed_file), "-o", str(o))
    assert code == cli.EXIT_INTEGRITY and out == ""
    assert err == "sealedckpt: error: chunk 0 of 2 failed authentication (tampered, reordered or spliced)\n"
    assert not o.exists()
    assert not any(x.name.startswith(".") for x in tmp_path.iterdir())  # no temp file left behind


def test_unseal_plain_safetensors_input(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    code, out, err = run(capsys, "unseal", str(st), "-o", str(tmp_path / "o"))
    assert code == cli.EXIT_FORMAT and out == ""
    assert error_lines(err) == [
        "sealedckpt: error: this is a plain (unencrypted, unsigned) safetensors file, not a sealed checkpoint",
        "hint: seal it: sealedckpt seal IN.safetensors -o OUT.sealed",
    ]


# --- rewrap ------------------------------------------------------------------------------------------


def slot_ids(capsys: Capsys, p: Path) -> list[str]:
    return [s.get("key_id", s["type"]) for s in json.loads(ok(capsys, "inspect", str(p), "--json"))["key_slots"]]


def test_rewrap_replaces_and_keeps_signature(capsys: Capsys, signed_file: Path, tmp_path: Path) -> None:
    old = json.loads(ok(capsys, "key", "show", "k", "--json"))
    new = gen(capsys, "--name", "new")
    before = json.loads(ok(capsys, "verify", str(signed_file), "--json"))
    code, out, err = run(capsys, "rewrap", str(signed_file), "--key", "new")
    assert (code, err) == (0, "")
    assert out == f"rewrapped {signed_file}: key slots {new['id']}\n"
    assert slot_ids(capsys, signed_file) == [new["id"]]
    assert old["id"] not in ok(capsys, "inspect", str(signed_file))
    after = json.loads(ok(capsys, "verify", str(signed_file), "--trust", "rel", "--json"))
    assert after["content_digest"] == before["content_digest"] and after["signers"][0]["trusted"] is True
    # the old key no longer opens it; the new one does
    code, out, err = run(capsys, "unseal", str(signed_file), "-o", str(tmp_path / "x"), "--key", "k")
    assert code == cli.EXIT_KEY and out == ""
    o = tmp_path / "o.safetensors"
    ok(capsys, "unseal", str(signed_file), "-o", str(o), "--key", "new", "--trust", "rel")
    assert_tensors(load_file(str(o)))


def test_rewrap_keep_and_remove_slot(capsys: Capsys, signed_file: Path) -> None:
    old = json.loads(ok(capsys, "key", "show", "k", "--json"))
    new = gen(capsys, "--name", "new")
    out = ok(capsys, "rewrap", str(signed_file), "--keep", "--key", "new")
    assert out == f"rewrapped {signed_file}: key slots {old['id']}, {new['id']}\n"
    assert slot_ids(capsys, signed_file) == [old["id"], new["id"]]
    out = ok(capsys, "rewrap", str(signed_file), "--keep", "--remove-slot", old["id"])
    assert out == f"rewrapped {signed_file}: key slots {new['id']}\n"
    assert slot_ids(capsys, signed_file) == [new["id"]]
    assert "[trusted]" in ok(capsys, "verify", str(signed_file), "--trust", "rel")
    # removing a slot that is not there names the slots that are
    code, out, err = run(capsys, "rewrap", str(signed_file), "--keep", "--remove-slot", old["id"])
    assert code == cli.EXIT_FORMAT and out == ""
    assert error_lines(err) == [
        f"sealedckpt: error: {signed_file}: no key slot {old['id']!r} in this file (slots: {new['id']})",
        "sealedckpt: error: 1 of 1 file(s) not rewrapped",
    ]


def test_rewrap_several_files_one_failing(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    new = gen(capsys, "--name", "new")
    a, b = tmp_path / "a.sealed", tmp_path / "b.sealed"
    ok(capsys, "seal", str(st), "-o", str(a))
    ok(capsys, "seal", str(st), "-o", str(b))
    missing = tmp_path / "missing.sealed"
    plain = st  # exists, but is not sealed
    code, out, err = run(capsys, "rewrap", str(a), str(missing), str(plain), str(b), "--key", "new")
    assert code != 0
    assert out == f"rewrapped {a}: key slots {new['id']}\nrewrapped {b}: key slots {new['id']}\n"
    lines = error_lines(err)
    assert len(lines) == 4
    assert lines[0].startswith(f"sealedckpt: error: {missing}: ") and "No such file or directory" in lines[0]
    assert lines[1].startswith(f"sealedckpt: error: {plain}: this is a plain") and "(hint:" not in lines[1]
    assert lines[2] == "hint: seal it: sealedckpt seal IN.safetensors -o OUT.sealed"
    assert lines[3] == "sealedckpt: error: 2 of 4 file(s) not rewrapped"
    assert slot_ids(capsys, a) == slot_ids(capsys, b) == [new["id"]]
    assert not missing.exists()
    assert_tensors(load_file(str(plain)))  # the unsealed input was left alone


def test_rewrap_all_ok_exit_code_and_single_error_code(capsys: Capsys, st: Path, tmp_path: Path) -> None:
    gen(capsys, "--name", "k")
    gen(capsys, "--name", "new")
    missing = tmp_path / "missing.sealed"
    code, out, err = run(capsys, "rewrap", str(missing), "--key", "new")
    assert code == cli.EXIT_ERROR and out == ""
    assert err.endswith("sealedckpt: error: 1 of 1 file(s) not rewrapped\n")


def test_rewrap_needs_new_keys(capsys: Capsys, signed_file: Path) -> None:
    before = signed_file.read_bytes()
    for extra in ([], ["--remove-slot", "abcd"]):
        code, out, err = run(capsys, "rewrap", str(signed_file), *extra)
        assert code == cli.EXIT_USAGE and out == ""
        assert err == ("sealedckpt: error: rewrap needs the new keys: --key, --to or --passphrase "
                       "(or --keep with --remove-slot)\n")  # fmt: skip
    assert signed_file.read_bytes() == before


def test_rewrap_to_recipient_and_with(capsys: Capsys, signed_file: Path, tmp_path: Path) -> None:
    ident = RecipientKey.generate()
    pub = tmp_path / "r.pub"
    pub.write_text(textkeys.public_to_text(ident.public) + "\n", encoding="ascii")
    out = ok(capsys, "rewrap", str(signed_file), "--to", str(pub), "--with", "k")
    # NB: `seal --to` labels this slot with the recipient's key id, `rewrap` with its position
    assert out == f"rewrapped {signed_file}: key slots #0:recipient\n"
    f = tmp_path / "id.key"
    f.write_text(textkeys.secret_to_text(ident), encoding="ascii")
    o = tmp_path / "o.safetensors"
    ok(capsys, "unseal", str(signed_file), "-o", str(o), "--identity", str(f))
    assert_tensors(load_file(str(o)))


# --- inspect / verify --------------------------------------------------------------------------------


def test_inspect_json(capsys: Capsys, signed_file: Path) -> None:
    k = json.loads(ok(capsys, "key", "show", "k", "--json"))
    rel = json.loads(ok(capsys, "key", "show", "rel", "--json"))
    code, out, err = run(capsys, "inspect", str(signed_file), "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["file"] == str(signed_file) and doc["version"] == 1 and doc["payload_type"] == "safetensors"
    assert doc["file_size"] == signed_file.stat().st_size and doc["chunks"] == 2  # the payload header, the data
    assert 0 < doc["payload_header_len"] < doc["payload_len"]
    assert doc["key_slots"] == [{"type": "symmetric", "key_id": k["id"]}]
    assert [s["key_id"] for s in doc["signatures"]] == [rel["id"]]
    assert doc["metadata"] == {"model": "tiny"} and doc["signatures_verified"] is False
    text = ok(capsys, "inspect", str(signed_file))
    assert f"key slot    symmetric (key id {k['id']})" in text and "(not verified)" in text


def test_inspect_names_recipient_and_passphrase_slots(capsys: Capsys, st: Path, tmp_path: Path, ppfile: Path) -> None:
    pub = textkeys.public_to_text(RecipientKey.generate().public)
    r, p = tmp_path / "r.sealed", tmp_path / "p.sealed"
    ok(capsys, "seal", str(st), "-o", str(r), "--to", pub)
    ok(capsys, "seal", str(st), "-o", str(p), "--passphrase", "--passphrase-file", str(ppfile), "--work-factor", "10")
    assert [s["type"] for s in json.loads(ok(capsys, "inspect", str(r), "--json"))["key_slots"]] == ["recipient"]
    assert [s["type"] for s in json.loads(ok(capsys, "inspect", str(p), "--json"))["key_slots"]] == ["passphrase"]


def test_verify_trust_keystore_name_and_file(capsys: Capsys, signed_file: Path, tmp_path: Path) -> None:
    rel = json.loads(ok(capsys, "key", "show", "rel", "--json"))
    code, out, err = run(capsys, "verify", str(signed_file), "--trust", "rel")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"signed (release) by {rel['public']} (key id {rel['id']}) at ") and lines[0].endswith(
        "[trusted]"
    )
    assert lines[-1] == f"OK: {signed_file}: every signature and every chunk verified"
    f = tmp_path / "rel.pub"
    f.write_text(ok(capsys, "key", "export-public", "rel"), encoding="ascii")
    code, out2, err = run(capsys, "verify", str(signed_file), "--trust", str(f))
    assert (code, err, out2) == (0, "", out)
    # a recipient key name is not a verify key; a symmetric key name is no public key at all
    gen(capsys, "--name", "rcp", "--kind", "recipient")
    code, out, err = run(capsys, "verify", str(signed_file), "--trust", "rcp")
    assert code == cli.EXIT_USAGE and out == ""
    assert error_lines(err) == [
        "sealedckpt: error: rcp: a recipient key cannot verify signatures",
        "hint: verify keys look like sckpt-vk1...",
    ]
    f.write_text("not a key\n", encoding="ascii")
    code, out, err = run(capsys, "verify", str(signed_file), "--trust", str(f))
    assert code == cli.EXIT_USAGE and out == "" and err.startswith(f"sealedckpt: error: {f}: not a public key: ")


# --- the whole flow ----------------------------------------------------------------------------------


def test_whole_flow(capsys: Capsys, st: Path, tmp_path: Path, home: Path) -> None:
    old = gen(capsys, "--name", "team", "--default")
    rel = gen(capsys, "--name", "release", "--kind", "signing")
    sealed = tmp_path / "model.sealed"
    out = ok(capsys, "seal", str(st), "-o", str(sealed), "--sign", "release", "--meta", "step=100")
    assert out.endswith(f"; key slots {old['id']}; signed by {rel['id']})\n")

    info = json.loads(ok(capsys, "inspect", str(sealed), "--json"))
    assert info["key_slots"] == [{"type": "symmetric", "key_id": old["id"]}]
    assert info["metadata"] == {"step": "100"}

    out = ok(capsys, "verify", str(sealed), "--trust", "release")
    assert "[trusted]" in out and out.endswith("every signature and every chunk verified\n")

    plain = tmp_path / "plain.safetensors"
    ok(capsys, "unseal", str(sealed), "-o", str(plain), "--trust", "release")
    assert_tensors(load_file(str(plain)))

    code, out, err = run(capsys, "key", "rotate", "team")
    assert code == 0 and "hint: re-wrap existing files with `sealedckpt rewrap FILES... --key team@" in err
    new = next(r for r in json.loads(ok(capsys, "key", "list", "--json")) if r["name"].startswith("team@"))
    assert new["default"] is True

    out = ok(capsys, "rewrap", str(sealed), "--key", new["name"])
    assert out == f"rewrapped {sealed}: key slots {new['id']}\n"
    assert_tensors(sealedckpt.load(sealed))  # key=None: the keystore resolves the NEW key from the slot
    assert_tensors(sealedckpt.load(sealed, trusted_signers=[sealedckpt.SigningKey.generate().public, *[
        textkeys.public_from_text(rel["public"])]]))  # fmt: skip

    out = ok(capsys, "key", "rm", "team", "--yes")
    assert out == f"removed key team ({old['id']})\n"
    assert not (home / "keys" / f"{old['id']}.key").exists()
    assert_tensors(sealedckpt.load(sealed))
    assert "[trusted]" in ok(capsys, "verify", str(sealed), "--trust", "release")
