"""benchmarks/attacks_peers.py at its small size: sealedckpt refuses every attack with a typed error.

The peer columns (CryptoTensors, OpenSSF model signing) run only where the optional ``bench`` extra
is installed; CI skips them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sealedckpt

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
LOAD_TRUSTED = "sealedckpt load (key + trusted_signers)"
LOAD_PLAIN = "sealedckpt load (key, no signer policy)"
VERIFY = "sealedckpt verify (keyless, trusted_signers)"


@pytest.fixture(scope="module")
def attacks() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import attacks_peers
    finally:
        sys.path.remove(str(BENCH))
    return attacks_peers


@pytest.fixture(scope="module")
def sealed_table(attacks: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return attacks.run(["sealedckpt"], tmp_path_factory.mktemp("attacks"))


def _typed_refusal(outcome: Any) -> type:
    assert outcome.status == "refused", outcome
    assert outcome.module.startswith("sealedckpt"), outcome
    cls = getattr(sealedckpt, outcome.error)
    assert issubclass(cls, sealedckpt.SealedCkptError)
    assert isinstance(cls, type)
    return cls


def test_sealed_refuses_every_attack_under_a_signer_policy(attacks: ModuleType, sealed_table: dict[str, Any]) -> None:
    expected = {"truncation": sealedckpt.IntegrityError, "chunk swap": sealedckpt.IntegrityError,
                "signature strip": sealedckpt.SignatureError, "plain substitute": sealedckpt.FormatError,
                "forgery": sealedckpt.IntegrityError}  # fmt: skip
    for what in attacks.ATTACKS:
        row = sealed_table[what]
        if what == "downgrade":
            assert {o.status for o in row.values()} == {"n.a."}
            continue
        for col in (LOAD_TRUSTED, VERIFY):
            cls = _typed_refusal(row[col])
            if what in expected:
                assert issubclass(cls, expected[what]), (what, col, row[col])


def test_sealed_without_a_policy_refuses_all_but_a_stripped_signature(
    attacks: ModuleType, sealed_table: dict[str, Any]
) -> None:
    for what in attacks.ATTACKS:
        outcome = sealed_table[what][LOAD_PLAIN]
        if what == "downgrade":
            assert outcome.status == "n.a."
        elif what == "signature strip":
            # by design (docs/FORMAT.md §8): a key holder may strip signatures; only a policy notices
            assert outcome.status == "accepted"
        else:
            _typed_refusal(outcome)


def test_sealed_keyless_reader_sees_no_names_or_values(sealed_table: dict[str, Any]) -> None:
    seen = sealed_table["keyless"][VERIFY].detail
    assert seen.startswith("tensor names 0/4, shapes not found")
    assert seen.endswith("tensor values 0/4")


def test_untouched_file_is_accepted_by_every_check(attacks: ModuleType, tmp_path: Path) -> None:
    """The control: the harness reports 'accepted' when nothing was changed, so refusals mean something."""
    keys = attacks.pl.Keys.generate(tmp_path)
    tool = attacks.Sealed(keys, attacks.state(), tmp_path)
    case = tmp_path / "case"
    case.mkdir()
    target = tool.make(case)
    for check in tool.checks.values():
        assert check(target).status == "accepted"


def test_peer_columns_run(attacks: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("cryptotensors")
    pytest.importorskip("model_signing")
    table = attacks.run(["CryptoTensors", "model-signing"], tmp_path)
    cols = set(table["keyless"])
    assert len(cols) == 2
    for what in attacks.ATTACKS:
        assert set(table[what]) == cols
        for outcome in table[what].values():
            assert outcome.status in {"refused", "accepted", "accepted, ALTERED", "n.a."}, (what, outcome)
    ct = "CryptoTensors safe_open (enc key + signer's public key)"
    assert table["truncation"][ct].status == "refused"
    assert "tensor names 4/4" in table["keyless"][ct].detail
