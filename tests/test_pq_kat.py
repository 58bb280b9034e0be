"""Known-answer tests for ML-DSA-65 (FIPS 204) and ML-KEM-768 (FIPS 203) against NIST ACVP vectors.

The data (tests/vectors/kat/acvp-fips203-fips204.json, provenance in its README) is a small subset
of NIST's ACVP-Server sample vectors, revision "FIPS204" / "FIPS203" (the final standards, not the
ipd drafts). What the ``cryptography`` library lets us replay:

- ML-DSA-65 keyGen: seed xi -> pk through ``from_seed_bytes`` (FIPS 204 final KeyGen_internal,
  with its xi || k || l domain separation). The expanded secret key is not exposed by the library
  (only the seed is), so the vector's ``sk`` is not compared.
- ML-DSA-65 sigVer: these ACVP cases test the *internal* interface (Verify_internal over the
  message as given). ``verify_mu`` replays them exactly, with
  mu = SHAKE256(SHAKE256(pk, 64) || M, 64) (FIPS 204 Algorithms 7 and 8); a further test pins that
  the library's external ``verify(sig, M, ctx)``, which sealedckpt uses, is Verify_internal over
  M' = 0 || len(ctx) || ctx || M (Algorithm 3), so the ACVP-checked operation under a known formula.
- ML-DSA-65 sigGen: NOT replayed. The library only signs hedged (it takes no ``rnd``), and the
  ACVP sigGen vectors give the expanded secret key (no seed, no public key), which it cannot import.
- ML-KEM-768 keyGen: d || z -> ek through ``from_seed_bytes``; the vector's expanded dk is not
  exposed, so only its embedded ek || H(ek) || z is checked against ours. ML-KEM encapsulation
  (no seed for m) and ACVP decapsulation (expanded dk) cannot be replayed; decapsulation from a
  seed is covered by the X-Wing vectors in tests/test_pq.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from sealedckpt.crypto import pq

KAT = Path(__file__).resolve().parent / "vectors" / "kat" / "acvp-fips203-fips204.json"


def _kat() -> Any:
    return json.loads(KAT.read_text(encoding="utf-8"))


def _mu(pk: bytes, message: bytes) -> bytes:
    """ML-DSA.Sign_internal / Verify_internal (FIPS 204 Alg. 7, 8): tr = H(pk, 64), mu = H(tr || M', 64)."""
    return hashlib.shake_256(hashlib.shake_256(pk).digest(64) + message).digest(64)


def _mu_external(pk: bytes, message: bytes, ctx: bytes) -> bytes:
    """ML-DSA.Sign / Verify (FIPS 204 Alg. 2, 3), pure: M' = 0x00 || len(ctx) || ctx || M."""
    return _mu(pk, b"\x00" + bytes([len(ctx)]) + ctx + message)


def _verifies_mu(pk: MLDSA65PublicKey, sig: bytes, mu: bytes) -> bool:
    try:
        pk.verify_mu(sig, mu)
    except InvalidSignature:
        return False
    return True


def test_acvp_subset_is_the_final_revision_and_parameter_sets() -> None:
    """The stored cases are the FIPS 204 / FIPS 203 final files for ML-DSA-65 / ML-KEM-768."""
    kat = _kat()
    assert "revision FIPS204" in kat["mldsa65"]["source"] and "revision FIPS203" in kat["mlkem768"]["source"]
    assert [v["tcId"] for v in kat["mldsa65"]["keyGen"]] == [26, 27, 28]  # tgId 2 = ML-DSA-65
    assert kat["mldsa65"]["sigVer_internal"]["tgId"] == 2
    assert [v["tcId"] for v in kat["mlkem768"]["keyGen"]] == [26, 27, 28]  # tgId 2 = ML-KEM-768
    results = {t["testPassed"] for t in kat["mldsa65"]["sigVer_internal"]["tests"]}
    assert results == {True, False}  # both accepts and rejects are replayed


@pytest.mark.parametrize("i", range(3))
def test_mldsa65_acvp_keygen(i: int) -> None:
    """ACVP ML-DSA-keyGen-FIPS204, ML-DSA-65: seed xi -> public key (1952 bytes), through the
    ``from_seed_bytes`` that CompositeSigningKey uses for its ML-DSA half."""
    v = _kat()["mldsa65"]["keyGen"][i]
    seed, want = bytes.fromhex(v["seed"]), bytes.fromhex(v["pk"])
    key = MLDSA65PrivateKey.from_seed_bytes(seed)
    assert key.public_key().public_bytes_raw() == want
    assert len(want) == pq.MLDSA65_PUB_SIZE and key.private_bytes_raw() == seed


def _sigver_cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = _kat()["mldsa65"]["sigVer_internal"]["tests"]
    return out


@pytest.mark.parametrize("case", _sigver_cases(), ids=lambda c: f"tc{c['tcId']}-{c['reason'].replace(' ', '-')}")
def test_mldsa65_acvp_sigver_internal(case: dict[str, Any]) -> None:
    """ACVP ML-DSA-sigVer-FIPS204, ML-DSA-65 (internal interface): accept exactly the cases NIST
    marks as passing, reject the modified message / signature, z too large, too many hints."""
    pk_bytes = bytes.fromhex(_kat()["mldsa65"]["sigVer_internal"]["pk"])
    pk = MLDSA65PublicKey.from_public_bytes(pk_bytes)
    sig, msg = bytes.fromhex(case["signature"]), bytes.fromhex(case["message"])
    assert len(sig) == pq.MLDSA65_SIG_SIZE
    assert _verifies_mu(pk, sig, _mu(pk_bytes, msg)) is case["testPassed"]


def test_mldsa65_acvp_sigver_valid_case_rejects_a_one_bit_change() -> None:
    """The known-good signature stops verifying when one bit of it, or of mu, flips."""
    g = _kat()["mldsa65"]["sigVer_internal"]
    pk_bytes = bytes.fromhex(g["pk"])
    pk = MLDSA65PublicKey.from_public_bytes(pk_bytes)
    good = next(t for t in g["tests"] if t["testPassed"])
    sig, mu = bytearray.fromhex(good["signature"]), bytearray(_mu(pk_bytes, bytes.fromhex(good["message"])))
    assert _verifies_mu(pk, bytes(sig), bytes(mu))
    sig[100] ^= 0x01
    assert not _verifies_mu(pk, bytes(sig), bytes(mu))
    sig[100] ^= 0x01
    mu[0] ^= 0x80
    assert not _verifies_mu(pk, bytes(sig), bytes(mu))


@pytest.mark.parametrize("ctx", [b"", b"sealedckpt/v1 ed25519+mldsa65", bytes(255)])
def test_mldsa65_external_verify_is_fips204_algorithm_3(ctx: bytes) -> None:
    """The library's ``sign``/``verify`` with a context (what crypto/pq.py uses) is the internal
    operation over M' = 0 || len(ctx) || ctx || M, whose verification the ACVP cases above pin:
    a signature verifies under the computed mu, and not under the mu of another context."""
    key = MLDSA65PrivateKey.from_seed_bytes(bytes.fromhex(_kat()["mldsa65"]["keyGen"][0]["seed"]))
    pk, pk_bytes = key.public_key(), key.public_key().public_bytes_raw()
    other = ctx[:-1] + b"x" if ctx else b"x"  # another context of at most 255 bytes
    sig = key.sign(b"message", ctx)
    assert _verifies_mu(pk, sig, _mu_external(pk_bytes, b"message", ctx))
    assert not _verifies_mu(pk, sig, _mu_external(pk_bytes, b"message", other))
    assert not _verifies_mu(pk, sig, _mu(pk_bytes, b"message"))  # not the bare message
    mu_sig = key.sign_mu(_mu_external(pk_bytes, b"other", ctx))
    pk.verify(mu_sig, b"other", ctx)  # and the other way round
    with pytest.raises(InvalidSignature):
        pk.verify(mu_sig, b"other", other)


@pytest.mark.parametrize("i", range(3))
def test_mlkem768_acvp_keygen(i: int) -> None:
    """ACVP ML-KEM-keyGen-FIPS203, ML-KEM-768: d || z -> encapsulation key (1184 bytes). The
    expanded decapsulation key is not exposed; its tail ek || H(ek) || z is checked against ours."""
    v = _kat()["mlkem768"]["keyGen"][i]
    seed, ek, dk = bytes.fromhex(v["d"] + v["z"]), bytes.fromhex(v["ek"]), bytes.fromhex(v["dk"])
    key = MLKEM768PrivateKey.from_seed_bytes(seed)
    ours = key.public_key().public_bytes_raw()
    assert ours == ek and len(ek) == pq.MLKEM768_PUB_SIZE and key.private_bytes_raw() == seed
    assert len(dk) == 2400 and dk[1152:2336] == ours
    assert dk[2336:2368] == hashlib.sha3_256(ours).digest() and dk[2368:] == bytes.fromhex(v["z"])
