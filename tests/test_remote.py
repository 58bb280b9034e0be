"""``scheme://`` URLs through fsspec: memory:// and s3:// (moto's S3 server on loopback, s3fs)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import warnings
from typing import Any

import pytest
import torch
from helpers import assert_same
from remote_fixtures import ServedBytes, multipart_uploads, s3fs_client

import sealedckpt
from sealedckpt import _remote

pytest.importorskip("fsspec")


def _ckpt(n: int = 4) -> dict[str, Any]:
    g = torch.Generator().manual_seed(n)
    return {"model": {f"l{i}.w": torch.randn(16, 8, generator=g) for i in range(n)}, "epoch": n, "name": "x"}


def _base(where: str, request: pytest.FixtureRequest) -> str:
    if where == "memory":
        return str(request.getfixturevalue("mem_dir"))
    if where == "file":
        return f"file://{request.getfixturevalue('tmp_path')}"
    return "s3://" + request.getfixturevalue("s3_bucket")


@pytest.fixture
def mem_dir() -> str:
    import secrets

    return f"memory://sealedckpt-test-{secrets.token_hex(6)}"


@pytest.mark.parametrize("where", ["memory", "s3", "file"])
def test_save_load_open_inspect_verify(
    where: str, request: pytest.FixtureRequest, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    base = _base(where, request)
    url = f"{base}/run/ck.sealed"
    obj = _ckpt()
    sealedckpt.save(obj, url, key=key, sign_with=signer, metadata={"model": "m"})
    assert_same(sealedckpt.load(url, key=key), obj)
    info = sealedckpt.inspect(url)
    assert info.metadata == {"model": "m"} and info.file_size == _remote.size(url)
    res = sealedckpt.verify(url, trusted_signers=[signer.public])
    assert [s.key_id for s in res.signers] == [signer.key_id]
    with sealedckpt.open(url, key=key) as f:
        assert torch.equal(f.get_tensor("model.l2.w"), obj["model"]["l2.w"])
    assert _remote.listdir(f"{base}/run") == ["ck.sealed"]
    with pytest.raises(sealedckpt.StorageNotFoundError, match="no such object") as ei:
        sealedckpt.load(f"{base}/run/missing.sealed", key=key)
    assert isinstance(ei.value, FileNotFoundError)


def test_plain_paths_do_not_import_fsspec(tmp_path: Any, key: sealedckpt.SymmetricKey) -> None:
    code = (
        "import sys, torch, sealedckpt; k = sealedckpt.SymmetricKey.generate(); p = sys.argv[1]; "
        "sealedckpt.save({'w': torch.ones(2)}, p, key=k); sealedckpt.load(p, key=k); sealedckpt.inspect(p); "
        "m = sealedckpt.CheckpointManager(sys.argv[2], key=k); m.save(1, {'a': 1}); m.load(); "
        "print('fsspec' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.sealed"), str(tmp_path / "run")],
                       capture_output=True, text=True, check=True)  # fmt: skip
    assert r.stdout.strip() == "False"


def test_tampered_remote_object_is_integrity_error(mem_dir: str, key: sealedckpt.SymmetricKey) -> None:
    url = f"{mem_dir}/t.sealed"
    sealedckpt.save(_ckpt(), url, key=key)
    fs, path = _remote.filesystem(url)
    data = bytearray(fs.cat_file(path))
    data[-200] ^= 1
    fs.pipe_file(path, bytes(data))
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.load(url, key=key)


# -- the manager ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["memory", "s3", "file"])
def test_manager_on_object_storage(where: str, request: pytest.FixtureRequest, key: sealedckpt.SymmetricKey) -> None:
    base = _base(where, request)
    run = f"{base}/run1"
    m = sealedckpt.CheckpointManager(run, key=key, keep_last=2, keep_every=100, metadata={"job": "j"})
    assert m.latest() is None and m.steps() == []
    with pytest.raises(sealedckpt.NoCheckpointError):
        m.load()
    for s in (100, 150, 200, 250, 300):
        m.save(s, {"s": s, "w": torch.full((4,), float(s))})
    assert m.steps() == [100, 200, 250, 300] and m.latest() == 300  # 150 retired; 100, 200 kept (keep_every)
    assert sorted(_remote.listdir(run)) == [sealedckpt.api.manager.step_name(s) for s in (100, 200, 250, 300)]
    assert sealedckpt.inspect(m.path(300)).metadata == {"job": "j", "step": "300"}
    assert m.load()["s"] == 300 and m.load(200)["w"].tolist() == [200.0] * 4
    # a foreign object and a damaged newest step: skipped with warnings, fallback walks back
    fs, path = _remote.filesystem(run)
    fs.pipe_file(f"{path}/notes.txt", b"hello")
    fs.pipe_file(f"{path}/{sealedckpt.api.manager.step_name(400)}", b"garbage" * 10)
    fresh = sealedckpt.CheckpointManager(run, key=key, keep_last=2)
    with pytest.warns(sealedckpt.SealedCkptWarning, match="notes.txt: not a checkpoint"):
        assert fresh.steps() == [100, 200, 250, 300, 400]
    with pytest.raises(sealedckpt.UnsafePayloadError, match="not a sealed checkpoint"):
        fresh.load()
    with pytest.warns(sealedckpt.SealedCkptWarning, match="skipped checkpoint step 400"):
        assert fresh.load(fallback=True)["s"] == 300
    assert fresh.loaded_step == 300 and [s for s, _ in fresh.skipped] == [400]


def test_manager_background_save_on_s3(s3_bucket: str, key: sealedckpt.SymmetricKey) -> None:
    with sealedckpt.CheckpointManager(f"s3://{s3_bucket}/bg", key=key, async_save=True, keep_last=1) as m:
        for s in range(3):
            m.save(s, {"w": torch.full((1000,), float(s))})
    assert m.steps() == [2] and m.load()["w"][0].item() == 2.0


# -- atomicity on S3 -----------------------------------------------------------------------


class _Boom(Exception):
    pass


def _big(nbytes: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = nbytes // (4 * 65536)
    return {f"t{i}": torch.randn(65536, generator=g) for i in range(n)}


@pytest.mark.parametrize("exc", [_Boom, KeyboardInterrupt])
def test_failed_multipart_upload_leaves_nothing(
    exc: type[BaseException], s3_bucket: str, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_bucket}/ck/big.sealed"
    sent: list[int] = []
    original = _remote._S3Upload._put_part

    def failing(self: Any, number: int, data: bytes) -> dict[str, Any]:
        sent.append(number)
        if number == 3:
            raise exc("injected in part 3")
        return original(self, number, data)

    monkeypatch.setattr(_remote._S3Upload, "_put_part", failing)
    with pytest.raises(exc, match="injected"):
        sealedckpt.save(_big(5 * _remote.PART_SIZE), url, key=key)
    assert 3 in sent
    assert not s3fs_client().exists(f"{s3_bucket}/ck/big.sealed")
    assert multipart_uploads(s3_bucket) == []


def test_interrupt_in_the_writer_aborts_the_upload(
    s3_bucket: str, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt in the sealing thread (not the upload), after parts went up."""
    from sealedckpt import container

    url = f"s3://{s3_bucket}/ck/int.sealed"
    original = container.seal

    def interrupted(out: Any, *args: Any, **kwargs: Any) -> Any:
        out.write(b"\0" * (3 * _remote.PART_SIZE))  # three parts on their way
        raise KeyboardInterrupt

    monkeypatch.setattr(container, "seal", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sealedckpt.save({"w": torch.ones(3)}, url, key=key)
    monkeypatch.setattr(container, "seal", original)
    assert not s3fs_client().exists(f"{s3_bucket}/ck/int.sealed")
    assert multipart_uploads(s3_bucket) == []


def test_replacing_an_object_keeps_the_old_one_until_complete(
    s3_bucket: str, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_bucket}/ck/keep.sealed"
    sealedckpt.save({"v": 1}, url, key=key)

    def failing(self: Any, number: int, data: bytes) -> dict[str, Any]:
        raise _Boom("network down")

    monkeypatch.setattr(_remote._S3Upload, "_put_part", failing)
    with pytest.raises(_Boom):
        sealedckpt.save(_big(3 * _remote.PART_SIZE), url, key=key)
    assert sealedckpt.load(url, key=key) == {"v": 1}
    assert multipart_uploads(s3_bucket) == []


def test_storage_failure_is_typed_and_names_the_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-not-a-real-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(sealedckpt.StorageError) as ei:
        sealedckpt.save({"a": 1}, "s3://no-such-bucket-here/x.sealed", key=sealedckpt.SymmetricKey.generate())
    assert "s3://no-such-bucket-here/x.sealed" in str(ei.value) and "very-secret" not in str(ei.value)
    assert _remote.redact("ftp://user:pw@host/x") == "ftp://***@host/x"


# -- lazy reads fetch only what they need --------------------------------------------------


def test_lazy_read_fetches_only_needed_ranges(
    s3_bucket: str, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 MiB chunk is the unit of a read, so the object is large enough (200 MiB of 256 KiB
    tensors) for one tensor (at most two chunks, plus the header and trailer) to be <= 5% of it."""
    url = f"s3://{s3_bucket}/lazy/big.sealed"
    obj = {f"layer{i:03d}.weight": torch.full((256, 256), float(i)) for i in range(800)}
    obj["layer401.weight"] = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    sealedckpt.save(obj, url, key=key)
    total = _remote.size(url)
    assert total > 200 << 20
    served = ServedBytes(monkeypatch)
    with sealedckpt.open(url, key=key) as f:
        t = f.get_tensor("layer401.weight")
    assert torch.equal(t, obj["layer401.weight"])
    assert 256 * 256 * 4 <= served.total <= 0.05 * total, (served.total, total)
    served.reset()
    assert sealedckpt.inspect(url).file_size == total
    assert served.total < 64 << 10  # the header and the trailer's head, not the object


def test_full_load_reads_each_byte_about_once(
    s3_bucket: str, key: sealedckpt.SymmetricKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3_bucket}/lazy/full.sealed"
    g = torch.Generator().manual_seed(0)
    obj = {f"layer{i}.weight": torch.randn(256, 256, generator=g) for i in range(96)}  # 24 MiB
    sealedckpt.save(obj, url, key=key)
    total = _remote.size(url)
    served = ServedBytes(monkeypatch)
    assert_same(sealedckpt.load(url, key=key), obj)
    assert total <= served.total <= total + (1 << 20)  # 32 MiB blocks: the object once, in few GETs
    assert served.requests <= 4


# -- sealed directories and the CLI --------------------------------------------------------


def test_cli_with_s3_urls(s3_bucket: str, s3_endpoint: str, tmp_path: Any, signer: sealedckpt.SigningKey) -> None:
    from sealedckpt.crypto import textkeys

    key = sealedckpt.SymmetricKey.generate()
    url = f"s3://{s3_bucket}/cli/m.sealed"
    sealedckpt.save({"w": torch.ones(3)}, url, key=key, sign_with=signer, metadata={"model": "tiny"})
    pub = textkeys.verify_key_to_text(signer.public)
    r = subprocess.run([sys.executable, "-m", "sealedckpt", "inspect", url, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metadata"] == {"model": "tiny"}
    r = subprocess.run([sys.executable, "-m", "sealedckpt", "verify", url, "--trust", pub, "--json"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    missing = f"s3://{s3_bucket}/cli/none.sealed"
    r = subprocess.run([sys.executable, "-m", "sealedckpt", "inspect", missing], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"sealedckpt: error: {missing}: no such object")


def test_remote_listing_and_delete(mem_dir: str) -> None:
    with _remote.atomic_write(f"{mem_dir}/d/a") as f:
        f.write(b"abc")
    assert _remote.exists(f"{mem_dir}/d/a") and _remote.size(f"{mem_dir}/d/a") == 3
    assert _remote.listdir(f"{mem_dir}/d") == ["a"] and _remote.listdir(f"{mem_dir}/nothing") == []
    with pytest.raises(_Boom), _remote.atomic_write(f"{mem_dir}/d/b") as f:
        f.write(b"partial")
        raise _Boom
    assert _remote.listdir(f"{mem_dir}/d") == ["a"]  # no temp left, no final name
    _remote.delete(f"{mem_dir}/d/a")
    with pytest.raises(sealedckpt.StorageNotFoundError):
        _remote.delete(f"{mem_dir}/d/a")
    warnings.simplefilter("error")  # nothing above warned


def test_sealed_directory_on_s3(
    s3_bucket: str, tmp_path: Any, key: sealedckpt.SymmetricKey, signer: sealedckpt.SigningKey
) -> None:
    from safetensors import torch as st

    src = tmp_path / "model"
    src.mkdir()
    sd = {f"l{i}.w": torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(4)}
    st.save_file(sd, str(src / "model.safetensors"), metadata={"format": "pt"})
    (src / "config.json").write_text('{"model_type": "tiny"}')
    url = f"s3://{s3_bucket}/models/tiny"
    entries = sealedckpt.seal_dir(src, url, key=key, sign_with=signer, metadata={"model": "tiny"})
    assert len(entries) == 2
    assert list(_remote.find(url)) == ["config.json.sealed", "model.safetensors.sealed",
                                 "sealedckpt-manifest.json", "sealedckpt-manifest.sig"]  # fmt: skip
    res = sealedckpt.verify_dir(url, trusted_signers=[signer.public])
    assert res.signers[0].trusted and res.metadata["model"] == "tiny"
    loaded = sealedckpt.load_dir(url, key=key, trusted_signers=[signer.public])
    assert all(torch.equal(loaded[n], sd[n]) for n in sd) and sorted(loaded) == sorted(sd)
    auditor = sealedckpt.SigningKey.generate()
    sealedckpt.sign_dir(url, auditor, trusted_signers=[signer.public])
    assert len(sealedckpt.verify_dir(url, trusted_signers=[signer.public, auditor.public]).signers) == 2
    out = tmp_path / "plain"
    assert sorted(sealedckpt.unseal_dir(url, out, key=key, trusted_signers=[signer.public])) == [
        "config.json", "model.safetensors"]  # fmt: skip
    assert (out / "config.json").read_text() == '{"model_type": "tiny"}'
    # an extra object under the directory is caught, as on disk
    s3fs_client().pipe_file(f"{s3_bucket}/models/tiny/extra.bin", b"x")
    with pytest.raises(sealedckpt.SealedCkptError, match=r"extra\.bin"):
        sealedckpt.verify_dir(url, trusted_signers=[signer.public])
    s3fs_client().rm_file(f"{s3_bucket}/models/tiny/extra.bin")
    # a listed object grown beyond what its entry allows is refused before it is downloaded
    s3fs_client().pipe_file(f"{s3_bucket}/models/tiny/config.json.sealed", b"\0" * (17 << 20))
    with pytest.raises(sealedckpt.FormatError, match="more than its manifest entry allows"):
        sealedckpt.verify_dir(url, trusted_signers=[signer.public])
    with pytest.raises(sealedckpt.InvalidArgumentError, match="already holds objects"):
        sealedckpt.seal_dir(src, url, key=key)


def test_cli_seal_unseal_rewrap_with_s3(s3_bucket: str, tmp_path: Any) -> None:
    from safetensors import torch as st

    from sealedckpt.crypto import textkeys

    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)}
    st.save_file(sd, str(tmp_path / "m.safetensors"))
    k1, k2 = sealedckpt.SymmetricKey.generate(), sealedckpt.SymmetricKey.generate()
    for name, k in (("k1", k1), ("k2", k2)):
        (tmp_path / name).write_text(textkeys.secret_to_text(k))
    url = f"s3://{s3_bucket}/cli/m.sealed"

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sealedckpt", *argv], capture_output=True, text=True)

    for name in ("k1", "k2"):
        r = cli("key", "import", name, str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    r = cli("seal", str(tmp_path / "m.safetensors"), "-o", url, "--key", "k1")
    assert r.returncode == 0, r.stderr
    assert sealedckpt.inspect(url).key_slots[0]["key_id"] == k1.key_id
    r = cli("rewrap", url, "--with", "k1", "--key", "k2")
    assert r.returncode == 0, r.stderr
    r = cli("unseal", url, "-o", str(tmp_path / "back.safetensors"), "--key", "k2")
    assert r.returncode == 0, r.stderr
    back = st.load_file(str(tmp_path / "back.safetensors"))
    assert back.keys() == sd.keys() and all(torch.equal(back[n], sd[n]) for n in sd)
    from sealedckpt.api.files import opens_with

    assert opens_with(url, k2) and not opens_with(url, k1)


_KILLED_WRITER = """
import sys, torch, sealedckpt
from sealedckpt.crypto import textkeys
key = textkeys.secret_from_text(sys.argv[2])
m = sealedckpt.CheckpointManager(sys.argv[1], key=key, keep_last=2)
g = torch.Generator().manual_seed(0)
for step in range(1, 1000):
    m.save(step, {"step": step, "w": torch.randn(5 << 20, generator=g)})  # 20 MiB: a multipart upload
    print(step, flush=True)
"""


def test_kill_during_s3_saves_leaves_only_complete_steps(s3_bucket: str, key: sealedckpt.SymmetricKey) -> None:
    from sealedckpt.crypto import textkeys

    url = f"s3://{s3_bucket}/killed"
    rng = random.Random(7)
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url, textkeys.secret_to_text(key)],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout is not None
        proc.stdout.readline()  # one step is complete
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        m = sealedckpt.CheckpointManager(url, key=key)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing but complete steps under the prefix
            steps = m.steps()
        assert steps and all(name.startswith("step-") for name in _remote.listdir(url))
        for s in steps:
            assert m.load(s)["step"] == s, (trial, s)
        s3fs_client().rm(f"{s3_bucket}/killed", recursive=True)


def test_remote_directory_errors_name_the_url(s3_bucket: str, key: sealedckpt.SymmetricKey) -> None:
    url = f"s3://{s3_bucket}/models/empty"
    s3fs_client().pipe_file(f"{s3_bucket}/models/empty/x.bin", b"x")
    with pytest.raises(sealedckpt.FormatError) as ei:
        sealedckpt.verify_dir(url)
    assert url in str(ei.value) and "/tmp" not in str(ei.value), str(ei.value)
