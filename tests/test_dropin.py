"""torch.load's call shapes work on sealedckpt.load, or are refused with a reason (never ignored)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from helpers import assert_same

import sealedckpt


@pytest.fixture
def pair(tmp_path: Path, key: sealedckpt.SymmetricKey) -> tuple[Path, Path, dict[str, object]]:
    model = torch.nn.Linear(3, 2)
    ckpt: dict[str, object] = {"model": model.state_dict(), "epoch": 3, "lr": torch.tensor(0.1)}
    torch.save(ckpt, tmp_path / "c.pt")
    sealedckpt.save(ckpt, tmp_path / "c.sealed", key=key)
    return tmp_path / "c.pt", tmp_path / "c.sealed", ckpt


@pytest.mark.parametrize("loc", ["cpu", torch.device("cpu"), {"cpu": "cpu"}, None])
def test_positional_map_location_as_torch(
    pair: tuple[Path, Path, dict[str, object]], key: sealedckpt.SymmetricKey, loc: object
) -> None:
    pt, sealed, _ = pair
    assert_same(sealedckpt.load(sealed, loc, key=key), torch.load(pt, loc, weights_only=True))


def test_weights_only_true_is_what_every_load_does(
    pair: tuple[Path, Path, dict[str, object]], key: sealedckpt.SymmetricKey
) -> None:
    pt, sealed, _ = pair
    assert_same(
        sealedckpt.load(sealed, map_location="cpu", weights_only=True, key=key),
        torch.load(pt, map_location="cpu", weights_only=True),
    )


def test_pickle_options_are_refused_with_a_reason(
    pair: tuple[Path, Path, dict[str, object]], key: sealedckpt.SymmetricKey
) -> None:
    _, sealed, _ = pair
    with pytest.raises(sealedckpt.InvalidArgumentError, match="weights-only") as exc:
        sealedckpt.load(sealed, weights_only=False, key=key)
    assert isinstance(exc.value, ValueError) and "--allow-pickle" in (exc.value.hint or "")
    with pytest.raises(sealedckpt.InvalidArgumentError, match="never unpickles"):
        sealedckpt.load(sealed, pickle_module=pickle, key=key)
    with pytest.raises(sealedckpt.ArgumentTypeError, match="encoding"):
        sealedckpt.load(sealed, key=key, encoding="latin1")
    with pytest.raises(TypeError):
        sealedckpt.load(sealed, key=key, weights_only="yes")  # type: ignore[arg-type]


def test_saving_a_module_says_what_to_save(key: sealedckpt.SymmetricKey) -> None:
    for obj in (torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)):
        with pytest.raises(sealedckpt.UnsupportedTypeError) as exc:
            sealedckpt.save(obj, io.BytesIO(), key=key)
        assert exc.value.hint == "save its state instead: sealedckpt.save(obj.state_dict(), path, ...)"
    with pytest.raises(sealedckpt.UnsupportedTypeError, match=r"cannot store model:") as exc:
        sealedckpt.save({"model": torch.nn.Linear(2, 2)}, io.BytesIO(), key=key)
    assert "state_dict()" in (exc.value.hint or "")


def test_rollback_message_without_model_metadata(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    sealedckpt.save({"x": 1}, tmp_path / "u.sealed", key=key)
    with pytest.raises(sealedckpt.RollbackError) as exc:
        sealedckpt.load(tmp_path / "u.sealed", key=key, expect_model="tiny")
    assert str(exc.value) == "file has no public 'model' metadata, expected 'tiny'"


@pytest.mark.parametrize("argv", [["--passphrase", "hunter2xyz"], ["--passphrase=hunter2xyz"]])
def test_passphrase_on_argv_is_explained_and_not_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    from helpers import run_cli

    code, out, err = run_cli(capsys, "seal", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "x"), *argv)
    assert code == 2 and out == ""
    assert "hunter2xyz" not in err and "sealedckpt: error:" in err
    assert "hint: --passphrase takes no value: secrets are never read from the command line" in err
    assert "--passphrase-file FILE ('-' = stdin)" in err


def test_key_export_secret_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving a key to CI or a second machine: export --secret to a 0600 file, import it elsewhere."""
    import os
    import stat

    from helpers import run_cli

    from sealedckpt.crypto import textkeys

    code, out, _ = run_cli(capsys, "key", "gen", "--name", "ci", "--default")
    assert code == 0
    sealedckpt.save({"w": torch.arange(3)}, tmp_path / "m.sealed")
    code, out, err = run_cli(capsys, "key", "export", "ci", "--secret", "-o", str(tmp_path / "ci.key"))
    assert code == 0 and out == ""
    assert err.startswith("sealedckpt: warning: ") and "holds the secret of key ci" in err
    assert stat.S_IMODE(os.stat(tmp_path / "ci.key").st_mode) == 0o600
    text = (tmp_path / "ci.key").read_text()
    assert isinstance(textkeys.secret_from_text(text.strip()), sealedckpt.SymmetricKey)
    monkeypatch.setenv("SEALEDCKPT_HOME", str(tmp_path / "other-machine"))
    code, out, _ = run_cli(capsys, "key", "import", "ci", str(tmp_path / "ci.key"))
    assert code == 0 and out.startswith("imported symmetric key ci")
    assert torch.equal(sealedckpt.load(tmp_path / "m.sealed")["w"], torch.arange(3))


def test_key_export_secret_refuses_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import run_cli

    run_cli(capsys, "key", "gen", "--name", "t")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    code, out, err = run_cli(capsys, "key", "export", "t", "--secret")
    assert code == 2 and "SCKPT-" not in out + err
    assert "refusing to print a secret key on a terminal" in err and "hint: write it to a file with -o FILE" in err
    code, out, err = run_cli(capsys, "key", "export", "t")  # public half: a symmetric key has none
    assert code == 2 and "has no public half" in err


def test_safe_open_matches_safetensors(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    """The same calls on a plain safetensors file and on the sealed one give the same results."""
    import safetensors
    import safetensors.torch as st

    sd = {"w": torch.randn(5, 3), "b": torch.arange(7, dtype=torch.int64), "h": torch.randn(4, 2).half()}
    st.save_file(sd, tmp_path / "m.safetensors", metadata={"format": "pt", "run": "exp-42"})
    sealedckpt.save(sd, tmp_path / "m.sealed", key=key, metadata={"format": "pt", "run": "exp-42"})
    with (
        safetensors.safe_open(tmp_path / "m.safetensors", framework="pt", device="cpu") as plain,
        sealedckpt.safe_open(tmp_path / "m.sealed", framework="pt", device="cpu", key=key) as sealed,
    ):
        assert sorted(sealed.keys()) == sorted(plain.keys())
        assert sealed.metadata() == plain.metadata()
        for name in plain.keys():
            assert_same(sealed.get_tensor(name), plain.get_tensor(name))
            assert_same(sealed[name], plain.get_tensor(name))
            assert_same(sealed.get_slice(name)[0:2], plain.get_slice(name)[0:2])
            assert sealed.get_slice(name).get_shape() == plain.get_slice(name).get_shape()
            assert sealed.get_slice(name).get_dtype() == plain.get_slice(name).get_dtype()
        with pytest.raises(KeyError):
            sealed["nope"]


def test_safe_open_refusals_are_typed(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    sealedckpt.save({"w": torch.ones(2)}, tmp_path / "m.sealed", key=key)
    with pytest.raises(sealedckpt.InvalidArgumentError, match="framework='np'"):
        sealedckpt.safe_open(tmp_path / "m.sealed", framework="np", key=key)
    if not torch.cuda.is_available():
        with pytest.raises(sealedckpt.DeviceError, match="CUDA is not available"):
            sealedckpt.safe_open(tmp_path / "m.sealed", device="cuda", key=key)
    with pytest.raises(sealedckpt.DeviceError, match="invalid device"):
        sealedckpt.safe_open(tmp_path / "m.sealed", device="warp:9", key=key)


def test_mmap_is_accepted_and_loads_the_same(
    pair: tuple[Path, Path, dict[str, object]], key: sealedckpt.SymmetricKey
) -> None:
    pt, sealed, _ = pair
    assert_same(
        sealedckpt.load(sealed, "cpu", mmap=True, weights_only=True, key=key),
        torch.load(pt, "cpu", mmap=True, weights_only=True),
    )
    with pytest.raises(TypeError):
        sealedckpt.load(sealed, key=key, mmap="yes")  # type: ignore[arg-type]


def test_safe_open_reaches_every_part_of_a_whole_checkpoint(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    """Non-tensor leaves (epoch, step, RNG state) and whole sub-objects, by dotted path, as load has them."""
    import random

    import numpy as np

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7, "py_rng": random.getstate(),
            "np_rng": np.random.get_state(), "lr": 0.5, "name": "run.1"}  # fmt: skip
    sealedckpt.save(ckpt, tmp_path / "c.sealed", key=key)
    whole = sealedckpt.load(tmp_path / "c.sealed", key=key)
    with sealedckpt.safe_open(tmp_path / "c.sealed", key=key) as f:
        assert f.get("epoch") == 7 and f.get("lr") == 0.5 and f.get("name") == "run.1"
        for part in ("model", "optimizer", "optimizer.param_groups", "optimizer.state.0", "py_rng", "np_rng",
                     "model.0.weight", "model.1.num_batches_tracked"):  # fmt: skip
            want = whole
            got = f.get(part)
            for k in (["model", "0.weight"] if part == "model.0.weight" else
                      ["model", "1.num_batches_tracked"] if part == "model.1.num_batches_tracked" else
                      [int(x) if x.isdigit() else x for x in part.split(".")]):  # fmt: skip
                want = want[k]
            assert_same(got, want, part)
        with pytest.raises(KeyError, match=r"nothing named 'optimizer\.nope'"):
            f.get("optimizer.nope")


def test_safe_open_get_reaches_into_namespaces(tmp_path: Path, key: sealedckpt.SymmetricKey) -> None:
    import argparse

    ckpt = {"args": argparse.Namespace(lr=0.1, tags={"a", "b"}), "w": torch.ones(2)}
    sealedckpt.save(ckpt, tmp_path / "c.sealed", key=key)
    with sealedckpt.safe_open(tmp_path / "c.sealed", key=key) as f:
        assert f.get("args.lr") == 0.1 and f.get("args.tags") == {"a", "b"}
        assert f.get("args") == argparse.Namespace(lr=0.1, tags={"a", "b"})


def test_passphrase_file_without_a_passphrase_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from helpers import run_cli

    sealedckpt.save({"w": torch.ones(1)}, tmp_path / "p.sealed", key=sealedckpt.Passphrase("pw", log2n=10))
    code, _, err = run_cli(capsys, "unseal", str(tmp_path / "p.sealed"), "-o", str(tmp_path / "out"))
    assert code == 6 and err.splitlines() == [
        "sealedckpt: error: this file is sealed with a passphrase, and none was given",
        "hint: pass --passphrase (asked on the terminal, or --passphrase-file FILE); Passphrase(...) in Python",
    ]
    with pytest.raises(sealedckpt.RollbackError) as exc:
        sealedckpt.load(tmp_path / "p.sealed", key=sealedckpt.Passphrase("pw", log2n=10), min_version=1)
    assert "None" not in str(exc.value) and "no numeric public 'version' metadata" in str(exc.value)
