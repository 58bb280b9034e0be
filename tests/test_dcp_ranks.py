"""Sealed DCP with real process groups: 2 gloo ranks (torch.multiprocessing spawn, CPU), then
a 1-process job reading what 2 ranks wrote (resharding). One spawn runs every 2-rank check."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import dcp_workers as w
import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import sealedckpt
from sealedckpt.dcp import SealedStorageReader

TIMEOUT = 240
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(root: Path, world: int = 2) -> list[dict[str, Any]]:
    ctx = mp.start_processes(w.run, args=(world, str(root), _free_port()), nprocs=world, join=False,
                             start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"ranks still running after {TIMEOUT}s (a hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [json.loads((root / f"result.{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("dcp-ranks")
    return root, _spawn(root)


def test_two_ranks_round_trip_async_and_failures(two_ranks: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = two_ranks
    for rank, res in enumerate(results):
        assert "error" not in res, f"rank {rank}:\n{res.get('error')}"
        assert res["extra"] == [7, "run-1", [1, 2]]
        assert res["resumed_equal"] is True  # save, load on 2 ranks, one more step == uninterrupted
        assert res["async_equal"] is True
        assert res["wrong_key"] == "DecryptionError"
        assert res["bad_data"] == "IntegrityError"
        assert res["bad_meta"] in ("IntegrityError", "FormatError")
        assert res["plain_dcp_bad_data"] == "CheckpointException:IntegrityError"


def _one_process_model_and_opt(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = w.make_model(seed)
    return model, torch.optim.Adam(model.parameters(), lr=0.01, foreach=False)


def test_sharded_checkpoint_loads_on_one_rank(two_ranks: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = two_ranks
    ref = sealedckpt.load(root / "reference.sealed", key=w.KEY)
    model, opt = _one_process_model_and_opt(9)
    w.train_step(model, opt, 3)  # optimizer state exists, and differs
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd, "extra": {"epoch": 0, "tag": "", "sizes": ()}}
    dcp.load(state, storage_reader=SealedStorageReader(root / "sharded", key=w.KEY, trusted_signers=[w.SIGNER.public]))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for k, v in ref["model"].items():
        assert torch.equal(model.state_dict()[k], v), k
    assert state["extra"] == {"epoch": 7, "tag": "run-1", "sizes": (1, 2)}
    # the resumed single process continues exactly as the 2-rank uninterrupted run would
    w.train_step(model, opt, 1)
    ref_model, ref_opt = _one_process_model_and_opt(0)
    w.train_step(ref_model, ref_opt, 0)
    w.train_step(ref_model, ref_opt, 1)
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6)


def test_unsharded_model_saved_by_two_loads_on_one(two_ranks: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = two_ranks
    names = sorted(p.name for p in (root / "plain").iterdir())
    assert names == [".metadata", "__0_0.sealed", "__1_0.sealed"]
    target = w.make_model(5).state_dict()
    dcp.load({"model": target}, storage_reader=SealedStorageReader(root / "plain", key=w.KEY))
    for k, v in w.make_model(3).state_dict().items():
        assert torch.equal(target[k], v), k


def test_verify_accepts_the_multi_rank_directory(two_ranks: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = two_ranks
    for d in ("sharded", "plain", "async"):  # every file any rank wrote is sealed, none a pickle
        for p in (root / d).iterdir():
            raw = p.read_bytes()
            assert sealedckpt.container.sniff.classify(raw[:512], raw[-512:]) == "sealed", p
    res = sealedckpt.dcp.verify(root / "sharded", trusted_signers=[w.SIGNER.public])
    assert [f.name for f in res.files] == ["__0_0.sealed", "__1_0.sealed"]
    with pytest.raises(sealedckpt.IntegrityError):
        sealedckpt.dcp.verify(root / "bad_data")
    with pytest.raises(sealedckpt.SealedCkptError):
        sealedckpt.dcp.verify(root / "bad_meta")
