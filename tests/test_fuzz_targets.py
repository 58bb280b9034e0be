"""The short CI run of the fuzz targets (``fuzz/``), and reproducers of what the long runs found.

Every target runs its committed seeds (which must be accepted, not just survive) and then a
fixed-seed hypothesis run of seed mutations: any exception other than a SealedCkptError, or an
input slower than the per-input deadline, fails. The long coverage-guided run is by hand:
``python fuzz/run.py TARGET --seconds 300`` (see ``fuzz/README.md``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sealedckpt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))

import run as fuzz_run  # noqa: E402
import targets as T  # noqa: E402

DEADLINE_S = 10.0  # per input; generous so a loaded CI machine does not flake
EXAMPLES = 120  # per target: 7 targets stay well under a minute together


@pytest.fixture(scope="module", autouse=True)
def _world() -> None:
    T.world()


def test_every_target_has_seeds() -> None:
    for name in T.TARGETS:
        assert len(T.seeds(name)) >= 1, name


def test_container_seeds_are_valid_files() -> None:
    """The seeds open with the fixed keys, so mutations start past the key slots."""
    w = T.world()
    for blob in T.seeds("container"):
        assert sealedckpt.inspect(io.BytesIO(blob)).payload_len > 0
        assert sealedckpt.load(io.BytesIO(blob), key=w.load_keys) is not None


def test_payload_seeds_load_behind_a_key() -> None:
    from sealedckpt.container import seal

    w = T.world()
    for raw in T.seeds("payload"):
        out = io.BytesIO()
        seal(out, len(raw), [memoryview(raw)], keys=[w.sym])
        assert sealedckpt.load(io.BytesIO(out.getvalue()), key=w.sym) is not None


def test_store_and_directory_seeds_parse(tmp_path: Path) -> None:
    from sealedckpt.stores import audit
    from sealedckpt.stores.trust import TrustStore

    w = T.world()
    for raw in T.seeds("audit"):
        (tmp_path / "log").write_bytes(raw)
        assert audit.verify(tmp_path / "log").records == 3
    for raw in T.seeds("trust"):
        T._write(w.trust_home / "trust.json", raw)
        assert len(TrustStore(w.trust_home).publishers()) == len(json.loads(raw)["keys"])
    with T.isolated_env(w.home):
        T._write(w.plain_dir / T.MANIFEST, T.seeds("manifest")[0], 0o644)
        assert sorted(sealedckpt.load_dir(w.plain_dir, key=w.sym)) == ["a", "b"]
        T._write(w.signed_dir / T.SIGNATURES, T.seeds("dir_signatures")[0], 0o644)
        assert sorted(sealedckpt.load_dir(w.signed_dir, key=w.sym, trusted_signers=w.signer.public)) == ["a", "b"]


def test_run_one_flags_foreign_exceptions_and_slow_inputs() -> None:
    def bad(data: bytes) -> None:
        raise KeyError("x")

    def refusing(data: bytes) -> None:
        raise sealedckpt.FormatError("no")

    def slow(data: bytes) -> None:
        while True:
            pass

    T.run_one(refusing, b"", 1.0)
    with pytest.raises(T.FuzzFinding, match="KeyError"):
        T.run_one(bad, b"", 1.0)
    with pytest.raises(T.FuzzFinding, match="ran past"):
        T.run_one(slow, b"", 0.2)


def _mutation_test(name: str) -> Callable[[], None]:
    fn = T.TARGETS[name]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(fuzz_run.mutated(T.seeds(name), st))
    def body(data: bytes) -> None:
        T.run_one(fn, data, DEADLINE_S)

    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(T.TARGETS))
def test_target_short_run(name: str) -> None:
    for seed in T.seeds(name):
        T.run_one(T.TARGETS[name], seed, DEADLINE_S)
    _mutation_test(name)()


def test_runner_hypothesis_engine() -> None:
    """``fuzz/run.py`` end to end with the fallback engine (what runs where atheris is absent)."""
    assert fuzz_run.main(["slots", "--runs", "30", "--engine", "hypothesis"]) == 0


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="atheris wheels stop at 3.11")
def test_runner_atheris_engine_reports_coverage() -> None:
    """Coverage-guided smoke run in a subprocess (libFuzzer owns the process): prints ``cov:``."""
    pytest.importorskip("atheris")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), "slots", "--runs", "300", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "engine=atheris" in out and " cov: " in out and "Done 300 runs" in out


# --- reproducers of findings (outside the files this suite owns: fixed at integration) -----------


def _expect_refusal(target: Callable[[bytes], None], data: bytes) -> None:
    """The target must refuse ``data`` with a SealedCkptError (run_one raises FuzzFinding otherwise)."""
    T.run_one(target, data, DEADLINE_S)


@pytest.mark.parametrize("doc", [b"[]", b'"x"', b"1", b"null"])
def test_trust_store_that_is_not_an_object(doc: bytes) -> None:
    _expect_refusal(T.fuzz_trust, doc)


def test_trust_store_publisher_with_non_string_key() -> None:
    _expect_refusal(T.fuzz_trust, b'{"version": 1, "keys": [{"name": "a", "public": 1, "added": "t"}], "rules": [], '
                                  b'"clock_skew": 300}')  # fmt: skip


@pytest.mark.parametrize("doc", [
    b'{"version": 1, "keys": [], "rules": [{"models": "*", "require": {"publisher": 99}}], "clock_skew": 300}',
    b'{"version": 1, "keys": [], "rules": [{"models": "*", "require": {"publisher": true}}], "clock_skew": 300}',
    b'{"version": 1, "keys": [], "rules": [], "clock_skew": -1}',
    b'{"version": 1, "keys": [], "rules": []}',
])  # fmt: skip
def test_trust_store_bad_policy(doc: bytes) -> None:
    _expect_refusal(T.fuzz_trust, doc)


def test_trust_store_deep_json() -> None:
    _expect_refusal(T.fuzz_trust, b"[" * 100_000)


def test_audit_log_deep_json() -> None:
    _expect_refusal(T.fuzz_audit, b"[" * 100_000 + b"\n")


def test_dir_signature_file_deep_json() -> None:
    _expect_refusal(T.fuzz_dir_signatures, b"[" * 100_000)


def _sig_file(**entry: Any) -> bytes:
    from sealedckpt.crypto import textkeys

    w = T.world()
    base = {"public_key": textkeys.verify_key_to_text(w.signer.public), "signed_at": 1,
            "signature": base64.b64encode(bytes(64)).decode()}  # fmt: skip
    return json.dumps({"version": 1, "signatures": [{**base, **entry}]}).encode()


def test_cli_verify_dir_signed_at_infinity() -> None:
    from sealedckpt.cli import EXIT_FORMAT, main
    from sealedckpt.crypto import textkeys

    w = T.world()
    T._write(w.signed_dir / T.SIGNATURES, _sig_file(signed_at=float("inf")), 0o644)
    with T.isolated_env(w.home), pytest.raises(SystemExit) as info:
        main(["verify-dir", str(w.signed_dir), "--trust", textkeys.verify_key_to_text(w.signer.public)])
    assert info.value.code == EXIT_FORMAT


@pytest.mark.parametrize("keep_public", [True, False], ids=["public_index", "sealed_index"])
def test_load_dir_deeply_nested_index(tmp_path: Path, keep_public: bool) -> None:
    """The index is parsed with plain ``json.loads`` (the manifest uses a depth-checked parser)."""
    import torch
    from safetensors.torch import save_file

    from sealedckpt.release import directory as distdir

    w = T.world()
    src = tmp_path / "src"
    src.mkdir()
    save_file({"a": torch.ones(2)}, str(src / "model.safetensors"))
    (src / "model.safetensors.index.json").write_text("[" * 100_000)
    distdir.seal_dir(src, tmp_path / "out", keys=[w.sym], keep_public=keep_public)
    with pytest.raises(sealedckpt.FormatError):
        sealedckpt.load_dir(tmp_path / "out", key=w.sym)
