"""Hugging Face models in sealed directories: save_pretrained / from_pretrained, no plaintext on disk."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import sealedckpt
from sealedckpt import hf
from sealedckpt.crypto import SigningKey, SymmetricKey
from sealedckpt.errors import (
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    RollbackError,
    SealedCkptError,
    SignatureError,
)


def _llama(tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _bert() -> BertModel:
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return BertModel(cfg).eval()


def _tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "hello", "sealed", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture
def key() -> SymmetricKey:
    return SymmetricKey.generate()


@pytest.fixture
def signer() -> SigningKey:
    return SigningKey.generate()


def test_causal_lm_sharded_signed_round_trip(tmp_path: Path, key: SymmetricKey, signer: SigningKey) -> None:
    model = _llama()
    out = tmp_path / "llama.sealed"
    entries = hf.save_pretrained(model, out, key=key, sign_with=signer, max_shard_size="20KB",
                                 metadata={"model": "llama-tiny", "version": "7"})  # fmt: skip
    model.save_pretrained(tmp_path / "plain", max_shard_size="20KB")
    assert sorted(e.source for e in entries) == sorted(os.listdir(tmp_path / "plain"))  # the same files
    assert len([e for e in entries if e.kind == "safetensors"]) > 1
    listing = [e.path for e in entries] + ["sealedckpt-manifest.json", "sealedckpt-manifest.sig"]
    assert sorted(os.listdir(out)) == sorted(listing)
    loaded = hf.from_pretrained(AutoModelForCausalLM, out, key=key, trusted_signers=[signer.public],
                                min_version=7, expect_model="llama-tiny")  # fmt: skip
    assert type(loaded) is LlamaForCausalLM
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # tied again, stored once
    x = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    assert loaded.generation_config.to_dict() == model.generation_config.to_dict()
    assert loaded.name_or_path == str(out)
    assert {**loaded.config.to_dict(), "_name_or_path": ""} == {**model.config.to_dict(), "_name_or_path": ""}
    # the manifest check and a keyless verification see the same directory
    assert [s.key_id for s in sealedckpt.verify_dir(out, trusted_signers=[signer.public]).signers] == [signer.key_id]
    # unseal-dir gives back a directory transformers loads by itself, with the same weights
    sealedckpt.unseal_dir(out, tmp_path / "unsealed", key=key)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "unsealed")
    with torch.no_grad():
        assert torch.equal(again(x).logits, model(x).logits)
    assert json.loads((tmp_path / "unsealed" / "config.json").read_text()) == json.loads(
        (tmp_path / "plain" / "config.json").read_text()
    )


def test_untied_lm_and_concrete_class(tmp_path: Path, key: SymmetricKey) -> None:
    model = _llama(tie=False)
    hf.save_pretrained(model, tmp_path / "m", key=key)
    loaded = hf.from_pretrained(LlamaForCausalLM, tmp_path / "m", key=key)
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_encoder_with_tokenizer(tmp_path: Path, key: SymmetricKey) -> None:
    model, tok = _bert(), _tokenizer()
    entries = hf.save_pretrained(model, tmp_path / "bert", key=key, tokenizer=tok)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        e.source for e in entries
    }
    loaded = hf.from_pretrained(AutoModel, tmp_path / "bert", key=key)
    assert type(loaded) is BertModel
    ids = tok("hello sealed world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, loaded(ids).last_hidden_state)
    tok2 = hf.tokenizer_from_pretrained(tmp_path / "bert", key=key)
    assert tok2("hello sealed world")["input_ids"] == tok("hello sealed world")["input_ids"] == [2, 3, 4]
    assert not [p for p in Path("/dev/shm").glob("sealedckpt-hf-*")]  # the RAM directory is gone


def test_no_plaintext_is_written(tmp_path: Path, key: SymmetricKey, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _llama()
    weight = model.model.layers[0].mlp.down_proj.weight.detach().numpy().tobytes()
    written: list[str] = []
    real_open = os.open

    def spy(path: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            written.append(os.fspath(path))
        return real_open(path, flags, *a, **k)

    real_builtin_open = builtins.open

    def spy_builtin(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            written.append(os.fspath(file))
        return real_builtin_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "open", spy)
    monkeypatch.setattr(builtins, "open", spy_builtin)
    hf.save_pretrained(model, tmp_path / "m", key=key, tokenizer=_tokenizer())
    monkeypatch.undo()
    outside = [p for p in written if not p.startswith((str(tmp_path), "/dev/shm/sealedckpt-hf-"))]
    assert outside == [] and any(p.startswith("/dev/shm/sealedckpt-hf-") for p in written)  # the spy sees writes
    for p in (tmp_path / "m").iterdir():
        data = p.read_bytes()
        assert weight[:64] not in data and b"model_type" not in data and b"hello" not in data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging directory left


def _save(tmp_path: Path, key: SymmetricKey, signer: SigningKey) -> Path:
    out = tmp_path / "m"
    hf.save_pretrained(_llama(), out, key=key, sign_with=signer, max_shard_size="20KB",
                       metadata={"model": "llama-tiny", "version": "7"})  # fmt: skip
    return out


def test_tampered_config_or_shard_fails(tmp_path: Path, key: SymmetricKey, signer: SigningKey) -> None:
    out = _save(tmp_path, key, signer)
    cfg = out / "config.json.sealed"
    pristine = cfg.read_bytes()
    raw = bytearray(pristine)
    raw[-40] ^= 1
    cfg.write_bytes(bytes(raw))
    with pytest.raises(SealedCkptError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key, trusted_signers=[signer.public])
    with pytest.raises(SealedCkptError):
        hf.tokenizer_from_pretrained(out, key=key)
    cfg.write_bytes(pristine)
    # a config sealed for the same key, of another model: the manifest lists another root
    other = tmp_path / "other"
    small = _llama()
    small.config.num_hidden_layers = 1
    hf.save_pretrained(small, other, key=key)
    cfg.write_bytes((other / "config.json.sealed").read_bytes())
    with pytest.raises(IntegrityError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key)
    cfg.write_bytes(pristine)
    shard = out / "model-00002-of-00006.safetensors.sealed"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x80
    shard.write_bytes(bytes(raw))
    with pytest.raises(SealedCkptError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key)


def test_swapped_dropped_or_extra_shard_fails(tmp_path: Path, key: SymmetricKey, signer: SigningKey) -> None:
    out = _save(tmp_path, key, signer)
    a, b = out / "model-00001-of-00006.safetensors.sealed", out / "model-00002-of-00006.safetensors.sealed"
    ra, rb = a.read_bytes(), b.read_bytes()
    a.write_bytes(rb)
    b.write_bytes(ra)
    with pytest.raises(IntegrityError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key)
    a.write_bytes(ra)
    b.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key)
    b.write_bytes(rb)
    (out / "extra.json").write_text("{}")
    with pytest.raises(IntegrityError, match="not in the manifest"):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key)


def test_keys_signers_and_versions_are_checked(tmp_path: Path, key: SymmetricKey, signer: SigningKey) -> None:
    out = _save(tmp_path, key, signer)
    with pytest.raises(SealedCkptError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=SymmetricKey.generate())
    with pytest.raises(SignatureError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key, trusted_signers=[SigningKey.generate().public])
    with pytest.raises(RollbackError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key, trusted_signers=[signer.public], min_version=8)
    with pytest.raises(RollbackError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key, expect_model="other")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path, key: SymmetricKey) -> None:
    model = _llama()
    model.config.intermediate_size = 80  # the config now disagrees with the weights it is saved with
    hf.save_pretrained(model, tmp_path / "m", key=key)
    with pytest.raises(IntegrityError, match="do not fit"):
        hf.from_pretrained(AutoModelForCausalLM, tmp_path / "m", key=key)


def test_refusals_and_atomicity(tmp_path: Path, key: SymmetricKey, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m"
    hf.save_pretrained(_llama(), out, key=key)
    with pytest.raises(FormatError, match="not empty"):
        hf.save_pretrained(_llama(), out, key=key)
    with pytest.raises(InvalidArgumentError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key, state_dict={})
    with pytest.raises(InvalidArgumentError):
        hf.from_pretrained(AutoModelForCausalLM, out, key=key, trust_remote_code=True)
    with pytest.raises(InvalidArgumentError):
        hf.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "lin", key=key)
    with pytest.raises(FormatError, match="no tokenizer files"):
        hf.tokenizer_from_pretrained(out, key=key)
    from sealedckpt.payload import flat

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(flat, "plan_flat", boom)
    with pytest.raises(RuntimeError):
        hf.save_pretrained(_llama(), tmp_path / "half", key=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # complete or absent: no partial directory


def test_version_is_remembered_only_once_the_model_is_built(tmp_path: Path, key: SymmetricKey) -> None:
    from sealedckpt.stores.trust import TrustStore
    from sealedckpt.stores.versions import VersionMemory

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    acme = SigningKey.generate()
    store = TrustStore(home)
    store.add("acme", acme.public, roles=["publisher"], scope=["llama-*"])
    bad = _llama()
    bad.config.intermediate_size = 80  # verified and signed, but its weights do not fit its config
    hf.save_pretrained(bad, tmp_path / "bad", key=key, sign_with=acme, metadata={"model": "llama-tiny", "version": "9"})
    with pytest.raises(IntegrityError, match="do not fit"):
        hf.from_pretrained(AutoModelForCausalLM, tmp_path / "bad", key=key, trusted_signers=store)
    assert VersionMemory(home).all() == {}
    hf.save_pretrained(_llama(), tmp_path / "good", key=key, sign_with=acme,
                       metadata={"model": "llama-tiny", "version": "7"})  # fmt: skip
    hf.from_pretrained(AutoModelForCausalLM, tmp_path / "good", key=key, trusted_signers=store)
    assert VersionMemory(home).all() == {"llama-tiny": 7}
