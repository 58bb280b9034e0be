"""Attacks on the trust policy (issue 14): each must be refused with the exact error and reason.

The actors: ``acme`` (a publisher of ``llama-*``), ``audit`` (an auditor with no decryption key),
a customer who holds a decryption key (and so can re-encrypt anything), and whoever serves files.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch as st
import torch

import sealedckpt
from sealedckpt import api
from sealedckpt.stores.trust import TrustStore, revocation_statement
from sealedckpt.stores.versions import VersionMemory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers import run_cli

T0 = int(time.time())  # about when the statements below are signed
DAY = 86_400


class Clock:
    """The verifier's injected clock; signers date statements with the real one (about T0)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    home: Path
    key: sealedckpt.SymmetricKey
    acme: sealedckpt.SigningKey
    audit: sealedckpt.SigningKey
    clock: Clock
    tmp: Path

    @property
    def store(self) -> TrustStore:
        return TrustStore(self.home, clock=self.clock)

    def seal(self, name: str, model: str, version: str, signers: list[Any], **kw: Any) -> Path:
        p = self.tmp / f"{name}.sealed"
        sealedckpt.save({"w": torch.ones(3)}, p, key=self.key, sign_with=signers,
                        metadata={"model": model, "version": version}, **kw)  # fmt: skip
        return p

    def load(self, p: Path, **kw: Any) -> Any:
        return sealedckpt.load(p, key=self.key, trusted_signers=self.store, **kw)


@pytest.fixture
def w(tmp_path: Path) -> World:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    world = World(home, sealedckpt.SymmetricKey.generate(), sealedckpt.SigningKey.generate(),
                  sealedckpt.SigningKey.generate(), Clock(T0 + 60), tmp_path)  # fmt: skip
    world.store.add("acme", world.acme.public, roles=["publisher"], scope=["llama-*"])
    world.store.add("audit", world.audit.public, roles=["auditor"], scope=["*"])
    world.store.set_rule("llama-*", {"publisher": 1, "auditor": 1})
    return world


def _countersign(w: World, p: Path, signer: sealedckpt.SigningKey, kind: str = "audit", **kw: Any) -> None:
    api.sign(p, signer, statement=kind, **kw)


def _forgery(w: World) -> Path:
    """A key holder re-encrypts its own weights as llama-tiny v999, signs with a key of its own,
    and gets the (keyless) auditor's counter-signature."""
    mallory = sealedckpt.SigningKey.generate()
    p = w.seal("forged", "llama-tiny", "999", [mallory])
    _countersign(w, p, w.audit, "counter-signature")
    return p


def test_auditor_only_forgery_refused_by_store_policy(w: World) -> None:
    p = _forgery(w)
    with pytest.raises(sealedckpt.SignatureError, match="no trusted key signed a release statement"):
        w.load(p, min_version=7, expect_model="llama-tiny")


def test_auditor_only_forgery_refused_with_explicit_key_list(w: World) -> None:
    """The issue's call: trusted_signers=[acme, audit], min_version=7, expect_model='llama-tiny'."""
    p = _forgery(w)
    with pytest.raises(sealedckpt.SignatureError, match="missing requirement: a release statement"):
        sealedckpt.load(p, key=w.key, trusted_signers=[w.acme.public, w.audit.public], min_version=7,
                        expect_model="llama-tiny")  # fmt: skip
    with pytest.raises(sealedckpt.SignatureError, match="release statement"):
        sealedckpt.verify(p, trusted_signers=[w.acme.public, w.audit.public], min_version=7, expect_model="llama-tiny")


def test_auditor_signing_a_release_statement_is_not_a_publisher(w: World) -> None:
    """The auditor signs the forgery as a *release*: it is trusted, but not a publisher."""
    p = w.seal("forged", "llama-tiny", "999", [w.audit])
    with pytest.raises(sealedckpt.SignatureError, match=r"missing requirement publisher>=1"):
        w.load(p)


def test_genuine_release_with_audit_loads_and_is_remembered(w: World) -> None:
    p = w.seal("v7", "llama-tiny", "7", [w.acme])
    _countersign(w, p, w.audit)
    assert torch.equal(w.load(p)["w"], torch.ones(3))
    assert VersionMemory(w.home).all() == {"llama-tiny": 7}


def test_threshold_unmet_names_the_requirement(w: World) -> None:
    p = w.seal("v7", "llama-tiny", "7", [w.acme])  # no audit
    with pytest.raises(sealedckpt.SignatureError, match=r"missing requirement auditor>=1 \(audit/counter-signature"):
        w.load(p)
    w.store.set_rule("llama-*", {"publisher": 2})
    _countersign(w, p, w.audit)
    with pytest.raises(sealedckpt.SignatureError, match=r"missing requirement publisher>=2 .*: 1 \(acme\)"):
        w.load(p)


def test_scope_mismatch_refused(w: World) -> None:
    p = w.seal("mistral", "mistral-7b", "1", [w.acme])
    _countersign(w, p, w.audit)
    with pytest.raises(sealedckpt.SignatureError, match=r"publisher>=1.*acme: model 'mistral-7b' is outside its scope"):
        w.load(p)


def test_expired_statement_refused(w: World) -> None:
    src = w.tmp / "plain.safetensors"
    st.save_file({"w": torch.ones(3)}, src)
    p = w.tmp / "exp.sealed"
    api.seal_file(src, p, key=w.key, sign_with=w.acme, metadata={"model": "llama-tiny", "version": "7"},
                  expires_at=T0 + DAY)  # fmt: skip
    _countersign(w, p, w.audit)
    w.clock.t = T0 + DAY - 10
    sealedckpt.unseal_file(p, w.tmp / "ok.safetensors", key=w.key, trusted_signers=w.store)
    w.clock.t = T0 + DAY + 301  # past expiry and the default 300 s allowance
    with pytest.raises(sealedckpt.SignatureError, match="release statement signed by acme expired"):
        w.load(p)
    with pytest.raises(sealedckpt.SignatureError, match="expired"):
        sealedckpt.verify(p, trusted_signers=w.store)


def test_clock_skew_allowance(w: World) -> None:
    p = w.seal("exp", "llama-tiny", "7", [w.acme], expires_at=T0 + DAY)
    _countersign(w, p, w.audit)
    w.clock.t = T0 + DAY + 200  # expired 200 s ago: within the default 300 s
    w.load(p)
    w.store.set_clock_skew(100)
    with pytest.raises(sealedckpt.SignatureError, match="expired"):
        w.load(p)
    # A statement dated in the future: beyond the allowance it is refused, within it accepted.
    w.clock.t = T0 - 200
    with pytest.raises(sealedckpt.SignatureError, match="in the future"):
        w.load(p)
    w.store.set_clock_skew(300)
    w.load(p)


def test_key_expiry(w: World) -> None:
    p = w.seal("v7", "llama-tiny", "7", [w.acme])
    _countersign(w, p, w.audit)
    w.store.remove("audit")
    w.store.add("audit", w.audit.public, roles=["auditor"], expires=T0 + DAY)
    w.load(p)
    w.clock.t = T0 + DAY + 301
    with pytest.raises(sealedckpt.SignatureError, match=r"auditor>=1.*audit: key expired"):
        w.load(p)


def test_replayed_v6_after_v7_refused_without_min_version(w: World) -> None:
    v6 = w.seal("v6", "llama-tiny", "6", [w.acme])
    _countersign(w, v6, w.audit)
    v7 = w.seal("v7", "llama-tiny", "7", [w.acme])
    _countersign(w, v7, w.audit)
    w.load(v6)  # first install: nothing remembered yet (documented limit)
    w.load(v7)
    with pytest.raises(sealedckpt.RollbackError, match="version 6, older than version 7 already loaded"):
        w.load(v6)
    with pytest.raises(sealedckpt.RollbackError):
        sealedckpt.verify(v6, trusted_signers=w.store)
    assert torch.equal(w.load(v6, allow_rollback=True)["w"], torch.ones(3))
    assert VersionMemory(w.home).all() == {"llama-tiny": 7}  # an allowed rollback lowers nothing
    VersionMemory(w.home).reset("llama-tiny")
    w.load(v6)


def test_remembered_model_without_numeric_version_refused(w: World) -> None:
    v7 = w.seal("v7", "llama-tiny", "7", [w.acme])
    _countersign(w, v7, w.audit)
    w.load(v7)
    odd = w.seal("odd", "llama-tiny", "latest", [w.acme])
    _countersign(w, odd, w.audit)
    with pytest.raises(sealedckpt.RollbackError, match="no numeric version"):
        w.load(odd)


def test_revoked_key_refused(w: World) -> None:
    p = w.seal("v7", "llama-tiny", "7", [w.acme])
    _countersign(w, p, w.audit)
    w.load(p)
    w.store.revoke("audit")
    with pytest.raises(sealedckpt.SignatureError, match="revoked key 'audit'"):
        w.load(p)


def test_signed_revocation_import(w: World) -> None:
    p = w.seal("v7", "llama-tiny", "7", [w.acme])
    _countersign(w, p, w.audit)
    # The auditor cannot revoke the publisher (not a publisher); a stranger cannot either.
    with pytest.raises(sealedckpt.SignatureError, match="not a trusted unrevoked publisher"):
        w.store.import_revocation(revocation_statement(w.audit, w.acme.public))
    with pytest.raises(sealedckpt.SignatureError, match="not a trusted unrevoked publisher"):
        w.store.import_revocation(revocation_statement(sealedckpt.SigningKey.generate(), w.acme.public))
    # acme (scope llama-*) may not revoke the auditor (scope *).
    with pytest.raises(sealedckpt.SignatureError, match="may not revoke audit"):
        w.store.import_revocation(revocation_statement(w.acme, w.audit.public))
    # A tampered revocation does not verify.
    raw = bytearray(revocation_statement(w.acme, w.acme.public))
    at = raw.index(b'"signature": "') + 20
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    with pytest.raises(sealedckpt.SignatureError, match="does not verify"):
        w.store.import_revocation(bytes(raw))
    hit = w.store.import_revocation(revocation_statement(w.acme, w.acme.public))
    assert hit.revoked and hit.revoked_by == "acme"
    with pytest.raises(sealedckpt.SignatureError, match="revoked key 'acme'"):
        w.load(p)


def test_directory_policy(w: World, tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    st.save_file({"w": torch.ones(2)}, src / "model.safetensors")
    d = tmp_path / "model.sealed"
    sealedckpt.seal_dir(src, d, key=w.key, sign_with=w.acme, metadata={"model": "llama-tiny", "version": "3"})
    with pytest.raises(sealedckpt.SignatureError, match="missing requirement auditor>=1"):
        sealedckpt.load_dir(d, key=w.key, trusted_signers=w.store)
    sealedckpt.sign_dir(d, w.audit, statement="audit")
    assert torch.equal(sealedckpt.load_dir(d, key=w.key, trusted_signers=w.store)["w"], torch.ones(2))
    assert VersionMemory(w.home).all() == {"llama-tiny": 3}
    w.store.revoke("acme")
    with pytest.raises(sealedckpt.SignatureError, match="revoked"):
        sealedckpt.verify_dir(d, trusted_signers=w.store)


def test_cli_trust_policy_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    signer = sealedckpt.SigningKey.generate()
    pub = tmp_path / "acme.pub"
    from sealedckpt.crypto import textkeys

    pub.write_text(textkeys.verify_key_to_text(signer.public))
    ok = run_cli(capsys, "trust", "add", "acme", str(pub), "--role", "publisher", "--scope", "llama-*",
                 "--expires", "2036-01-01")  # fmt: skip
    assert ok[0] == 0 and "as publisher for llama-*, until 2036-01-01T00:00:00Z" in ok[1]
    assert run_cli(capsys, "trust", "policy", "set", "llama-*", "publisher=1", "auditor=1")[0] == 0
    code, out, _ = run_cli(capsys, "trust", "show")
    assert code == 0 and "llama-*: auditor>=1 publisher>=1" in out and "clock skew allowance: 300s" in out
    bad = [
        (("trust", "add", "x", str(pub), "--expires", "soon"), "not a date"),
        (("trust", "add", "x2", str(pub), "--role", "Bad Role"), "bad role"),
        (("trust", "add", "acme", str(pub)), "already trusted"),
        (("trust", "policy", "set", "llama-*", "publisher"), "ROLE=N"),
        (("trust", "policy", "set", "llama-*", "publisher=99"), "threshold"),
        (("trust", "policy", "rm", "nope-*"), "no policy rule"),
        (("trust", "policy", "clock-skew", "999999"), "clock skew"),
        (("trust", "revoke", "nobody"), "no trusted key named"),
        (("trust", "import-revocation", str(tmp_path / "missing.json")), "cannot read"),
        (("trust", "import-revocation", str(pub)), "not valid JSON"),
        (("trust", "versions", "--reset", "nothing"), "no remembered version"),
        (("trust", "versions", "--reset", "a", "--reset-all"), "not both"),
        (("verify", str(pub), "--trust", "store", "--trust", "acme"), "cannot be mixed"),
    ]
    for argv, want in bad:
        code, out, err = run_cli(capsys, *argv)
        assert code != 0, argv
        assert err.startswith("sealedckpt: error:") or "\nsealedckpt: error:" in err, (argv, err)
        assert want in err, (argv, err)
        assert "Traceback" not in err
    assert run_cli(capsys, "trust", "revoke", "acme")[0] == 0
    code, out, _ = run_cli(capsys, "trust", "show", "--json")
    assert code == 0 and '"revoked": true' in out


@pytest.mark.parametrize(("doc", "why"), [
    ('{"version": 1, "keys": [], "rules": [{"models": "*", "require": {"publisher": 99}}], "clock_skew": 300}',
     "threshold"),
    ('{"version": 1, "keys": [], "rules": [{"models": "*", "require": {"publisher": true}}], "clock_skew": 300}',
     "wrong type"),
    ('{"version": 1, "keys": [], "rules": [], "clock_skew": -1}', "clock_skew"),
    ('{"version": 1, "keys": [], "rules": []}', "not a"),
    ('{"version": 1, "keys": [{"name": "a", "public": "sckpt-vk1x", "added": "t"}], "rules": [], "clock_skew": 0}',
     "invalid"),
    ('{"version": 1, "keys": [{"name": "a", "public": "x", "added": "t", "kind": "rsa"}], "rules": [], '
     '"clock_skew": 0}', "unknown key kind"),
])  # fmt: skip
def test_damaged_trust_store_refused(tmp_path: Path, doc: str, why: str) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    (home / "trust.json").write_text(doc)
    (home / "trust.json").chmod(0o600)
    with pytest.raises(sealedckpt.KeystoreError, match=why):
        TrustStore(home).policy()


def test_statement_bytes_are_canonical_and_algorithm_free() -> None:
    from sealedckpt.container import statement as stm

    s = stm.Statement("release", "blake3:" + "ab" * 32, 1_700_000_000, "llama-tiny", "7", 1_800_000_000)
    raw = s.encode()
    assert raw == (
        b'{"_type":"sealedckpt/statement/v1","expires_at":1800000000,"model":"llama-tiny",'
        b'"signed_at":1700000000,"subject":"blake3:' + b"ab" * 32 + b'","type":"release","version":"7"}'
    )
    assert stm.parse(raw) == s
    assert stm.pae(b"{}") == b"DSSEv1 41 application/vnd.sealedckpt.statement+json 2 {}"
    for bad in (
        raw.replace(b",", b", ", 1),
        raw.replace(b'"release"', b'"publish"'),
        raw[:-1] + b',"extra":1}',
        raw.replace(b'"7"', b"7"),
    ):
        with pytest.raises(sealedckpt.FormatError):
            stm.parse(bad)


def test_cli_policy_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    st.save_file({"w": torch.ones(3)}, tmp_path / "m.safetensors")
    for name in ("pub", "aud"):
        assert run_cli(capsys, "key", "gen", "--kind", "signing", "--name", name)[0] == 0
    assert run_cli(capsys, "key", "gen", "--name", "k")[0] == 0
    m, d = str(tmp_path / "m.sealed"), str(tmp_path / "d.sealed")
    src = str(tmp_path / "m.safetensors")
    code, _, err = run_cli(capsys, "seal", src, "-o", m, "--key", "k", "--expires", "2036-01-01")
    assert code == 2 and "sealedckpt: error: --expires dates a signed statement; it needs --sign" in err
    assert not Path(m).exists()
    code, _, err = run_cli(capsys, "seal", str(tmp_path / "m.safetensors"), "-o", m, "--key", "k", "--sign", "pub",
                           "--meta", "model=mistral-7b", "--meta", "version=3", "--expires", "2036-01-01")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "verify", m, "--trust", "store")
    assert code == 5 and "trust store is empty" in err and err.startswith("sealedckpt: error:")
    assert run_cli(capsys, "trust", "add", "acme", "pub", "--scope", "llama-*")[0] == 0
    assert run_cli(capsys, "trust", "add", "audit", "aud", "--role", "auditor")[0] == 0
    code, out, err = run_cli(capsys, "verify", m, "--trust", "store")
    assert code == 5 and "outside its scope llama-*" in err and "OK" not in out
    assert "hint: see `sealedckpt trust show`" in err
    code, _, err = run_cli(capsys, "sign", m, "--key", "aud", "--as", "bogus")
    assert code == 2 and "sealedckpt: error:" in err and "invalid choice" in err
    assert run_cli(capsys, "sign", m, "--key", "aud", "--as", "audit", "--expires", "2036-01-01")[0] == 0
    code, out, _ = run_cli(capsys, "verify", m, "--json")
    rows = json.loads(out)["signers"]
    assert [(r["statement"], r["expires_at"]) for r in rows] == [("release", "2036-01-01T00:00:00Z"),
                                                                 ("audit", "2036-01-01T00:00:00Z")]  # fmt: skip
    assert run_cli(capsys, "trust", "rm", "acme")[0] == 0
    assert run_cli(capsys, "trust", "add", "acme", "pub", "--scope", "mistral-*")[0] == 0
    assert run_cli(capsys, "verify", m, "--trust", "store")[0] == 0
    assert run_cli(capsys, "unseal", m, "-o", d, "--key", "k", "--trust", "store")[0] == 0
    code, out, _ = run_cli(capsys, "trust", "versions", "--json")
    assert json.loads(out) == {"mistral-7b": 3}
    code, _, err = run_cli(capsys, "trust", "sign-revocation", "./nope.pub", "--key", "pub", "-o", str(tmp_path / "r"))
    assert code == 2 and "sealedckpt: error:" in err
    rev = str(tmp_path / "rev.json")
    assert run_cli(capsys, "trust", "sign-revocation", "acme", "--key", "pub", "-o", rev)[0] == 0
    code, out, _ = run_cli(capsys, "trust", "import-revocation", rev)
    assert code == 0 and "revoked acme" in out
    code, _, err = run_cli(capsys, "verify", m, "--trust", "store")
    assert code == 5 and "revoked key 'acme'" in err
    code, _, err = run_cli(capsys, "verify", m, "--trust", "acme")
    assert code == 2 and "--trust acme: that key is revoked" in err
