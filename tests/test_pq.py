"""Post-quantum keys: the X-Wing (ML-KEM-768 + X25519) recipient slot, Ed25519 + ML-DSA-65
composite signatures, their text forms, keystore kinds and CLI, and known-answer tests."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from helpers import load_bytes, run_cli, seal_bytes
from safetensors.torch import load_file, save_file

import sealedckpt
from sealedckpt import (
    CompositeSigningKey,
    CompositeVerifyKey,
    PQRecipientKey,
    RecipientKey,
    SigningKey,
    SymmetricKey,
)
from sealedckpt.container import format as fmt
from sealedckpt.crypto import pq, textkeys
from sealedckpt.errors import DecryptionError, FormatError, InvalidArgumentError, SignatureError

KAT = Path(__file__).resolve().parent / "vectors" / "kat"
OBJ = {"w": torch.arange(6, dtype=torch.float32)}


# --- known answers ---------------------------------------------------------------------------


def _xwing_vectors() -> list[dict[str, str]]:
    out: list[dict[str, str]] = json.loads((KAT / "xwing-draft.json").read_text(encoding="utf-8"))
    return out


@pytest.mark.parametrize("i", range(3))
def test_xwing_draft_vectors(i: int) -> None:
    """draft-connolly-cfrg-xwing-kem test vectors (spec/test-vectors.json of the draft's repository):
    key generation from the seed (hence ML-KEM-768 KeyGen from d || z and X25519), decapsulation
    (hence the combiner), and the X25519 half of encapsulation. The ML-KEM half of encapsulation
    cannot be replayed: ``cryptography`` takes no encapsulation seed."""
    v = _xwing_vectors()[i]
    key = PQRecipientKey(bytes.fromhex(v["sk"]))
    assert key.public.to_bytes().hex() == v["pk"]
    ct = bytes.fromhex(v["ct"])
    assert key.decapsulate(ct).hex() == v["ss"]
    eseed = bytes.fromhex(v["eseed"])
    assert X25519PrivateKey.from_private_bytes(eseed[32:]).public_key().public_bytes_raw() == ct[1088:]


def test_xwing_combiner_binds_its_label_and_inputs() -> None:
    base = pq.xwing_combiner(b"m" * 32, b"x" * 32, b"c" * 32, b"p" * 32)
    want = hashlib.sha3_256(b"m" * 32 + b"x" * 32 + b"c" * 32 + b"p" * 32 + b"\\.//^\\").digest()
    assert base == want and pq.XWING_LABEL.hex() == "5c2e2f2f5e5c"


def test_mldsa65_from_seed_is_deterministic_and_sizes_match_fips204() -> None:
    """Sizes and determinism; the NIST ACVP known answers (FIPS 204 final) are in tests/test_pq_kat.py."""
    a = MLDSA65PrivateKey.from_seed_bytes(bytes(range(32)))
    b = MLDSA65PrivateKey.from_seed_bytes(bytes(range(32)))
    assert a.public_key().public_bytes_raw() == b.public_key().public_bytes_raw()
    assert len(a.public_key().public_bytes_raw()) == pq.MLDSA65_PUB_SIZE == 1952
    assert len(a.sign(b"m")) == pq.MLDSA65_SIG_SIZE == 3309


# --- hybrid recipient ------------------------------------------------------------------------


def test_pq_recipient_round_trip_and_slot_layout() -> None:
    alice = PQRecipientKey.generate()
    data = seal_bytes(OBJ, alice.public)
    assert torch.equal(load_bytes(data, alice)["w"], OBJ["w"])
    info = sealedckpt.inspect(io.BytesIO(data))
    assert info.key_slots == [{"type": "pq-recipient", "kem": "mlkem768x25519"}]
    (content_len,) = struct.unpack_from("<I", data, 12)
    pos = fmt.PREAMBLE_SIZE + content_len + 4 + 2
    slot_type, body_len = struct.unpack_from("<BH", data, pos)
    assert (slot_type, body_len) == (4, 1088 + 32 + 48)
    assert alice.public.to_bytes() not in data  # no recipient identifier is stored


def test_pq_wrong_key_and_classical_identity_fail_typed() -> None:
    data = seal_bytes(OBJ, PQRecipientKey.generate().public)
    with pytest.raises(DecryptionError, match="post-quantum"):
        load_bytes(data, PQRecipientKey.generate())
    with pytest.raises(DecryptionError):
        load_bytes(data, RecipientKey.generate())


def test_pq_key_never_opens_a_classical_slot() -> None:
    pqk = PQRecipientKey.generate()
    with sealedckpt.allow_classical_recipients():
        data = seal_bytes(OBJ, [RecipientKey.generate().public, SymmetricKey.generate()])
    with pytest.raises(DecryptionError):
        load_bytes(data, pqk)


def _slot_body_offset(data: bytes) -> int:
    (content_len,) = struct.unpack_from("<I", data, 12)
    return fmt.PREAMBLE_SIZE + content_len + 4 + 2 + 3


@pytest.mark.parametrize(
    ("where", "error"),
    [(0, DecryptionError), (1100, DecryptionError), (1120, DecryptionError), (1167, DecryptionError)],
)
def test_tampered_pq_slot_fails(where: int, error: type[Exception]) -> None:
    """A bit flipped in ct_M (implicit rejection), ct_X, or the wrapped DEK: the slot does not open.
    (A recipient slot names no key, so this reads as "no key opens it", as for X25519 slots.)"""
    alice = PQRecipientKey.generate()
    data = bytearray(seal_bytes(OBJ, alice.public))
    data[_slot_body_offset(bytes(data)) + where] ^= 0x01
    with pytest.raises(error):
        load_bytes(bytes(data), alice)


def test_pq_low_order_share_is_a_format_error() -> None:
    alice = PQRecipientKey.generate()
    data = bytearray(seal_bytes(OBJ, alice.public))
    at = _slot_body_offset(bytes(data)) + 1088
    data[at : at + 32] = bytes(32)
    with pytest.raises(FormatError, match="low-order"):
        load_bytes(bytes(data), alice)


def test_mixing_pq_and_classical_recipients_is_refused_unless_asked() -> None:
    pqk, classical = PQRecipientKey.generate(), RecipientKey.generate()
    with pytest.raises(InvalidArgumentError, match="undo the post-quantum protection"):
        seal_bytes(OBJ, [pqk.public, classical.public])
    with sealedckpt.allow_classical_recipients():
        data = seal_bytes(OBJ, [pqk.public, classical.public])
    for k in (pqk, classical):
        assert torch.equal(load_bytes(data, k)["w"], OBJ["w"])
    # a symmetric 256-bit key is not weakened by a quantum computer: allowed next to a PQ slot
    sym = SymmetricKey.generate()
    assert torch.equal(load_bytes(seal_bytes(OBJ, [pqk.public, sym]), sym)["w"], OBJ["w"])


def test_rewrap_adding_a_classical_slot_to_a_pq_file_is_refused(tmp_path: Path) -> None:
    pqk, classical = PQRecipientKey.generate(), RecipientKey.generate()
    src = tmp_path / "a.sealed"
    sealedckpt.save(OBJ, src, key=pqk.public)
    with pytest.raises(InvalidArgumentError, match="refusing to mix"):
        sealedckpt.rewrap_file(src, key=pqk, add=classical.public, keep=True)
    with sealedckpt.allow_classical_recipients():
        sealedckpt.rewrap_file(src, key=pqk, add=classical.public, keep=True)
    assert torch.equal(sealedckpt.load(src, key=classical)["w"], OBJ["w"])


def test_pq_text_forms_round_trip_and_catch_typos() -> None:
    k = PQRecipientKey.generate()
    pub, sec = textkeys.public_to_text(k.public), textkeys.secret_to_text(k)
    assert pub.startswith("sckpt1pq1") and sec.startswith("SCKPT-PQ-SECRET-KEY-1")
    assert textkeys.public_from_text(pub) == k.public and textkeys.secret_from_text(sec) == k
    bad = pub[:100] + ("q" if pub[100] != "q" else "p") + pub[101:]
    with pytest.raises(InvalidArgumentError, match="checksum"):
        textkeys.public_from_text(bad)
    c = CompositeSigningKey.generate()
    vk, sk = textkeys.public_to_text(c.public), textkeys.secret_to_text(c)
    assert vk.startswith("sckpt-pqvk1") and sk.startswith("SCKPT-PQ-SIGNING-KEY-1")
    assert textkeys.verify_key_from_text(vk) == c.public and textkeys.secret_from_text(sk) == c
    assert type(textkeys.secret_from_text(sk)) is CompositeSigningKey
    assert repr(c).startswith("CompositeSigningKey(key_id=") and sk[30:60] not in repr(c)
    for secret in (c, k):
        with pytest.raises(sealedckpt.ArgumentTypeError, match="cannot be pickled or copied"):
            copy.copy(secret)


# --- composite signatures --------------------------------------------------------------------


def test_composite_sign_verify_and_each_half_is_needed() -> None:
    c = CompositeSigningKey.generate()
    sig = c.sign(b"message")
    assert len(sig) == pq.COMPOSITE_SIG_SIZE == 64 + 3309
    c.public.verify(sig, b"message")
    with pytest.raises(SignatureError):
        c.public.verify(sig, b"other message")
    for i in (0, 63, 64, len(sig) - 1):  # first and last byte of each half
        broken = bytearray(sig)
        broken[i] ^= 0x01
        with pytest.raises(SignatureError):
            c.public.verify(bytes(broken), b"message")
    with pytest.raises(SignatureError, match="wrong length"):
        c.public.verify(sig[:64], b"message")


def test_composite_halves_sign_the_domain_separated_representative() -> None:
    """Neither half is a plain signature over the message: a bare Ed25519 verifier over M fails."""
    c = CompositeSigningKey.generate()
    sig = c.sign(b"m")
    ed = sealedckpt.VerifyKey(c.public.to_bytes()[:32])
    with pytest.raises(SignatureError):
        ed.verify(sig[:64], b"m")
    ed.verify(sig[:64], pq.composite_representative(b"m"))


def test_composite_signature_round_trip_in_a_file(tmp_path: Path) -> None:
    c, e = CompositeSigningKey.generate(), SigningKey.generate()
    key = SymmetricKey.generate()
    path = tmp_path / "s.sealed"
    sealedckpt.save(OBJ, path, key=key, sign_with=[c, e])
    res = sealedckpt.verify(path, trusted_signers=[c.public])
    assert [(type(s.public_key), s.trusted) for s in res.signers] == [
        (CompositeVerifyKey, True),
        (sealedckpt.VerifyKey, False),
    ]
    assert torch.equal(sealedckpt.load(path, key=key, trusted_signers=[c.public])["w"], OBJ["w"])
    sigs = sealedckpt.inspect(path).signatures
    assert [s["alg"] for s in sigs] == ["ed25519+mldsa65", "ed25519"] and sigs[0]["key_id"] == c.key_id


def _composite_trailer_signature_offset(data: bytes) -> int:
    """Offset of the composite signature in a file with one composite entry (the last bytes)."""
    return len(data) - pq.COMPOSITE_SIG_SIZE


@pytest.mark.parametrize("half", ["ed25519", "mldsa65"])
def test_composite_signature_with_one_half_broken_fails(tmp_path: Path, half: str) -> None:
    c, key = CompositeSigningKey.generate(), SymmetricKey.generate()
    path = tmp_path / "s.sealed"
    sealedckpt.save(OBJ, path, key=key, sign_with=c)
    data = bytearray(path.read_bytes())
    at = _composite_trailer_signature_offset(bytes(data)) + (10 if half == "ed25519" else 64 + 1000)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="does not verify"):
        sealedckpt.verify(path)  # with no policy: an invalid entry is always an error
    with pytest.raises(SignatureError):
        sealedckpt.load(path, key=key, trusted_signers=[c.public])


def _ed25519_half(c: CompositeSigningKey) -> SigningKey:
    """White box: the composite key's Ed25519 half (crypto/pq.py's SHAKE256 expansion)."""
    x = hashlib.shake_256(b"sealedckpt/v1 composite seed ed25519+mldsa65\x00" + c.to_bytes()).digest(64)
    half = SigningKey(x[:32])
    assert half.public.to_bytes() == c.public.to_bytes()[:32]
    return half


def test_classical_signature_not_accepted_where_a_composite_key_is_trusted(tmp_path: Path) -> None:
    """Even by the composite key's own Ed25519 half, in a file or a directory manifest."""
    c, key = CompositeSigningKey.generate(), SymmetricKey.generate()
    half = _ed25519_half(c)
    path = tmp_path / "s.sealed"
    sealedckpt.save(OBJ, path, key=key, sign_with=half)
    with pytest.raises(SignatureError, match="untrusted"):
        sealedckpt.load(path, key=key, trusted_signers=[c.public])
    with pytest.raises(SignatureError, match="untrusted"):
        sealedckpt.verify(path, trusted_signers=[c.public])
    src, out = tmp_path / "d", tmp_path / "d.sealed"
    src.mkdir()
    save_file({"w": torch.ones(2)}, str(src / "model.safetensors"))
    sealedckpt.seal_dir(src, out, key=key, sign_with=half)
    with pytest.raises(SignatureError, match="untrusted"):
        sealedckpt.verify_dir(out, trusted_signers=[c.public])


def test_composite_signed_directory_round_trip(tmp_path: Path) -> None:
    c, key = CompositeSigningKey.generate(), PQRecipientKey.generate()
    src, out = tmp_path / "d", tmp_path / "d.sealed"
    src.mkdir()
    save_file({"w": torch.ones(2)}, str(src / "model.safetensors"))
    sealedckpt.seal_dir(src, out, key=key.public, sign_with=c)
    sig = json.loads((out / "sealedckpt-manifest.sig").read_text())["signatures"][0]
    assert sig["alg"] == "ed25519+mldsa65" and base64.b64decode(sig["public_key"]) == c.public.to_bytes()
    assert len(base64.b64decode(sig["signature"])) == pq.COMPOSITE_SIG_SIZE
    res = sealedckpt.verify_dir(out, trusted_signers=[c.public])
    assert [s.trusted for s in res.signers] == [True]
    loaded: Any = sealedckpt.load_dir(out, key=key, trusted_signers=[c.public])
    assert torch.equal(loaded["w"], torch.ones(2))


def test_composite_verify_key_refuses_a_small_order_ed25519_half() -> None:
    c = CompositeSigningKey.generate()
    raw = (1).to_bytes(32, "little") + c.public.to_bytes()[32:]
    with pytest.raises(SignatureError, match="small-order"):
        CompositeVerifyKey(raw)


# --- keystore and CLI ------------------------------------------------------------------------


def _ok(capsys: Any, *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, (argv, err)
    return out


def test_cli_pq_recipient_and_composite_signing_round_trip(tmp_path: Path, capsys: Any) -> None:
    _ok(capsys, "key", "gen", "--kind", "pq-recipient", "--name", "alice")
    _ok(capsys, "key", "gen", "--kind", "pq-signing", "--name", "pub")
    _ok(capsys, "key", "gen", "--kind", "recipient", "--name", "bob")
    pub_text = _ok(capsys, "key", "export", "pub").strip()
    assert pub_text.startswith("sckpt-pqvk1")
    recs = {r["name"]: r["kind"] for r in json.loads(_ok(capsys, "key", "list", "--json"))}
    assert recs == {"alice": "pq-recipient", "pub": "pq-signing", "bob": "recipient"}
    plain, sealed, back = tmp_path / "m.safetensors", tmp_path / "m.sealed", tmp_path / "back.safetensors"
    save_file({"w": torch.arange(4.0)}, str(plain))
    _ok(capsys, "seal", str(plain), "-o", str(sealed), "--to", "alice", "--sign", "pub")
    _ok(capsys, "trust", "add", "acme", pub_text)
    out = _ok(capsys, "verify", str(sealed), "--trust", "acme")
    assert "signed (release) by sckpt-pqvk1" in out and "… (key id" in out and "[trusted]" in out and len(out) < 1000
    _ok(capsys, "unseal", str(sealed), "-o", str(back), "--trust", "acme")
    assert torch.equal(load_file(str(back))["w"], torch.arange(4.0))
    code, _, err = run_cli(
        capsys, "seal", str(plain), "-o", str(tmp_path / "mix.sealed"), "--to", "alice", "--to", "bob"
    )
    assert code != 0 and "sealedckpt: error: refusing to mix post-quantum" in err and "hint: " in err
    assert "Traceback" not in err
    _ok(
        capsys,
        "seal",
        str(plain),
        "-o",
        str(tmp_path / "mix.sealed"),
        "--to",
        "alice",
        "--to",
        "bob",
        "--allow-classical",
    )


def test_cli_pq_key_export_import_secret(tmp_path: Path, capsys: Any) -> None:
    _ok(capsys, "key", "gen", "--kind", "pq-recipient", "--name", "alice")
    secret = tmp_path / "alice.key"
    _ok(capsys, "key", "export", "alice", "--secret", "-o", str(secret))
    assert secret.read_text().startswith("SCKPT-PQ-SECRET-KEY-1") and (secret.stat().st_mode & 0o777) == 0o600
    public = _ok(capsys, "key", "export", "alice").strip()
    _ok(capsys, "key", "rm", "alice", "--yes")
    _ok(capsys, "key", "import", "alice2", str(secret))
    plain, sealed = tmp_path / "m.safetensors", tmp_path / "m.sealed"
    save_file({"w": torch.arange(4.0)}, str(plain))
    _ok(capsys, "seal", str(plain), "-o", str(sealed), "--to", public)
    _ok(capsys, "unseal", str(sealed), "-o", str(tmp_path / "o.safetensors"))  # keystore finds alice2


# --- trust policy: composite keys in the trust store, rules that require them ----------------


def _release(path: Path, key: SymmetricKey, signer: SigningKey, model: str) -> Path:
    sealedckpt.save(OBJ, path, key=key, sign_with=signer, metadata={"model": model})
    return path


def test_policy_requiring_composite_refuses_a_classical_only_signer(tmp_path: Path) -> None:
    from sealedckpt.stores.trust import TrustStore

    c, e, key = CompositeSigningKey.generate(), SigningKey.generate(), SymmetricKey.generate()
    store = TrustStore()
    store.add("pq-pub", c.public)
    store.add("old-pub", e.public)
    assert [p.kind for p in store.publishers()] == ["ed25519+mldsa65", "ed25519"]
    classical = _release(tmp_path / "a.sealed", key, e, "llama-7b")
    composite = _release(tmp_path / "b.sealed", key, c, "llama-7b")
    other = _release(tmp_path / "c.sealed", key, e, "gpt-tiny")
    for p in (classical, composite, other):  # no rule yet: either algorithm publishes
        assert torch.equal(sealedckpt.load(p, key=key, trusted_signers="store")["w"], OBJ["w"])
    rule = store.set_rule("llama-*", {"publisher": 1}, algs=["ed25519+mldsa65"])
    assert rule.algs == ["ed25519+mldsa65"]
    with pytest.raises(SignatureError, match=r"publisher>=1.*old-pub: signed with ed25519, the policy for "
                                             r"'llama-7b' requires ed25519\+mldsa65"):  # fmt: skip
        sealedckpt.load(classical, key=key, trusted_signers="store")
    with pytest.raises(SignatureError, match="requires ed25519"):
        sealedckpt.verify(classical, trusted_signers="store")
    assert torch.equal(sealedckpt.load(composite, key=key, trusted_signers="store")["w"], OBJ["w"])
    assert [s.alg for s in sealedckpt.verify(composite, trusted_signers="store").signers] == ["ed25519+mldsa65"]
    assert torch.equal(sealedckpt.load(other, key=key, trusted_signers="store")["w"], OBJ["w"])  # not llama-*
    # a classical signature by the composite key's own Ed25519 half is not the trusted composite key's
    half = _release(tmp_path / "d.sealed", key, _ed25519_half(c), "llama-7b")
    with pytest.raises(SignatureError, match="untrusted"):
        sealedckpt.load(half, key=key, trusted_signers="store")
    with pytest.raises(InvalidArgumentError, match="unknown signature algorithm 'mldsa65'"):
        store.set_rule("llama-*", {"publisher": 1}, algs=["mldsa65"])


def test_trust_store_refuses_a_key_whose_text_is_not_its_kind(tmp_path: Path) -> None:
    from sealedckpt.stores.trust import TrustStore

    store = TrustStore()
    store.add("pq-pub", CompositeSigningKey.generate().public)
    doc = json.loads(store.path.read_text())
    assert doc["keys"][0]["public"].startswith("sckpt-pqvk1") and doc["rules"] == []
    doc["keys"][0]["kind"] = "ed25519"  # a composite key's text filed as a classical key
    store.path.write_text(json.dumps(doc))
    with pytest.raises(sealedckpt.KeystoreError, match="is a ed25519\\+mldsa65 key, not ed25519"):
        store.publishers()


def test_cli_policy_require_alg_and_trust_by_name_or_text(tmp_path: Path, capsys: Any) -> None:
    _ok(capsys, "key", "gen", "--kind", "pq-signing", "--name", "pq")
    _ok(capsys, "key", "gen", "--kind", "signing", "--name", "ed")
    pq_text, ed_text = (_ok(capsys, "key", "export", n).strip() for n in ("pq", "ed"))
    _ok(capsys, "trust", "add", "pq-pub", pq_text)
    _ok(capsys, "trust", "add", "ed-pub", ed_text)
    plain = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(4.0)}, str(plain))
    _ok(capsys, "key", "gen", "--kind", "symmetric", "--name", "team")
    files = {}
    for signer in ("pq", "ed"):
        files[signer] = tmp_path / f"{signer}.sealed"
        _ok(capsys, "seal", str(plain), "-o", str(files[signer]), "--key", "team", "--sign", signer,
            "--meta", "model=llama-7b")  # fmt: skip
    out = _ok(capsys, "trust", "policy", "set", "llama-*", "publisher=1", "--require-alg", "ed25519+mldsa65")
    assert out.strip() == "models llama-*: require publisher>=1 (signed with ed25519+mldsa65)"
    rules = json.loads(_ok(capsys, "trust", "show", "--json"))["rules"]
    assert rules == [{"models": "llama-*", "require": {"publisher": 1}, "algs": ["ed25519+mldsa65"]}]
    assert "llama-*: publisher>=1 (signed with ed25519+mldsa65)" in _ok(capsys, "trust", "show")
    _ok(capsys, "verify", str(files["pq"]), "--trust", "store")
    code, _, err = run_cli(capsys, "verify", str(files["ed"]), "--trust", "store")
    assert code != 0 and "sealedckpt: error: trust policy not met" in err and "requires ed25519+mldsa65" in err
    assert "Traceback" not in err
    # an explicit --trust list (a trust-store name or the key text) takes composite keys too
    assert "[trusted]" in _ok(capsys, "verify", str(files["pq"]), "--trust", "pq-pub")
    assert "[trusted]" in _ok(capsys, "verify", str(files["pq"]), "--trust", pq_text)
    code, _, err = run_cli(capsys, "verify", str(files["ed"]), "--trust", "pq-pub")
    assert code != 0 and "untrusted" in err
    code, _, err = run_cli(capsys, "trust", "policy", "set", "x-*", "publisher=1", "--require-alg", "rsa")
    assert code != 0 and "unknown signature algorithm 'rsa'" in err and "Traceback" not in err
