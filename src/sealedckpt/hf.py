"""Hugging Face ``transformers`` models in sealed directories, without plaintext on disk.

:func:`save_pretrained` writes what ``model.save_pretrained`` writes (safetensors shards and
their index, ``config.json``, ``generation_config.json``, a tokenizer's files) as a sealed
directory (``NAME.sealed`` files and a signed manifest, see docs/DISTRIBUTION.md): shards are
laid out from the model's tensors in memory and configs from their JSON text, so no weight or
config byte is written in plaintext. :func:`from_pretrained` checks the manifest (and its
signature), reads ``config.json`` through it, decrypts the shards into memory and hands them to
transformers' own loader (meta-device init, parameters assigned without a copy, tied weights
re-tied); :func:`tokenizer_from_pretrained` loads the tokenizer.

transformers has no in-memory save or load for tokenizers: their files pass through a private
(0700) directory on a RAM-backed tmpfs (``/dev/shm``), removed right after; without such a
mount a tokenizer is refused rather than written to disk.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._json import strict_loads
from .api import _keys
from .api._common import audit_log, audited, gc_paused
from .api._keys import LoadKey, SaveKey, Trusted
from .api._trust import keys_of, policy_check
from .crypto import SigningKey
from .errors import FormatError, IntegrityError, InvalidArgumentError
from .release.builder import Item, blob_item, seal_items
from .release.directory import DirEntry, _safe_rel
from .release.loading import read_release
from .release.policy import DirReleaseCheck
from .stores.audit import AuditLog
from .stores.keystore import Keystore

StrPath = str | os.PathLike[str]
CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
_RAM_DIR = "/dev/shm"
_MAX_TOKENIZER_FILES = 64
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
_LOAD_KWARGS_REFUSED = ("state_dict", "config", "trust_remote_code", "pretrained_model_name_or_path", "gguf_file")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError("sealedckpt.hf needs transformers: pip install 'sealedckpt[hf]'") from None
    return transformers


def _check_model(model: Any) -> None:
    if not callable(getattr(model, "save_pretrained", None)) or not hasattr(model, "config"):
        raise InvalidArgumentError(f"expected a transformers PreTrainedModel, got {type(model).__qualname__}")
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "_hf_peft_config_loaded", False):
        raise InvalidArgumentError("quantized models and PEFT adapters are not supported by sealedckpt.hf")
    if getattr(model, "is_remote_code", lambda: False)():
        raise InvalidArgumentError("models with remote code are not supported: a sealed directory holds no code")


def _weights(model: Any) -> dict[str, Any]:
    """The state_dict transformers' ``save_pretrained`` writes: ignored keys dropped, tied weights
    stored once, original checkpoint names restored."""
    from transformers import modeling_utils as mu

    state = model.state_dict()
    for k in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state.pop(k, None)
    state = mu.remove_tied_weights_from_state_dict(state, model)
    revert = getattr(mu, "revert_weight_conversion", None)
    return revert(model, state) if revert is not None else state


def _configs(model: Any) -> list[Item]:
    """``config.json`` (and ``generation_config.json``) as ``save_pretrained`` writes them."""
    config = model.config
    config.dtype = str(model.dtype).split(".")[1]
    config.architectures = [type(model).__name__]
    if hasattr(config, "validate"):
        config.validate()
    items = [blob_item(CONFIG, config.to_json_string(use_diff=True).encode("utf-8"))]
    gen = getattr(model, "generation_config", None)
    if gen is not None and model.can_generate():
        gen.validate()
        text = gen.to_json_string(use_diff=True, keys_to_pop=["compile_config"])
        items.append(blob_item(GENERATION_CONFIG, text.encode("utf-8")))
    return items


def _shards(model: Any, max_shard_size: int | str) -> Iterator[Item]:
    """The weight shards (one laid out at a time) and, when there are several, their index."""
    from huggingface_hub import split_torch_state_dict_into_shards

    from .payload.flat import plan_flat

    state = _weights(model)
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)  # fmt: skip
    for shard_file, names in split.filename_to_tensors.items():
        plan = plan_flat({n: state[n] for n in names}, {"format": "pt"})
        yield Item(shard_file, "safetensors", plan.payload_len, plan.segments())
    if split.is_sharded:
        index = {"metadata": {"total_parameters": model.num_parameters(), **split.metadata},
                 "weight_map": split.tensor_to_filename}  # fmt: skip
        yield blob_item("model.safetensors.index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def _ram_dir() -> Iterator[Path]:
    """A private (0700) directory on a RAM-backed tmpfs, removed on exit."""
    mounts = Path("/proc/self/mounts")
    on_tmpfs = mounts.exists() and any(
        line.split()[1:3] == [_RAM_DIR, "tmpfs"] for line in mounts.read_text().splitlines() if len(line.split()) > 2
    )
    if not on_tmpfs:
        raise InvalidArgumentError(
            f"no RAM-backed tmpfs at {_RAM_DIR}: tokenizer files would have to be written to disk in plaintext",
            hint="seal the tokenizer files with `sealedckpt seal-dir` on a trusted machine instead",
        )
    d = Path(tempfile.mkdtemp(prefix="sealedckpt-hf-", dir=_RAM_DIR))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _tokenizer_items(tokenizer: Any, taken: set[str]) -> list[Item]:
    """The files ``tokenizer.save_pretrained`` writes, read back from a RAM directory."""
    items = []
    with _ram_dir() as d:
        tokenizer.save_pretrained(d)
        for path in sorted(p for p in d.rglob("*") if p.is_file()):
            rel = path.relative_to(d).as_posix()
            if rel in taken:
                continue  # the model's own config.json / generation_config.json win
            items.append(blob_item(rel, path.read_bytes()))
    if len(items) > _MAX_TOKENIZER_FILES:
        raise InvalidArgumentError(f"the tokenizer wrote more than {_MAX_TOKENIZER_FILES} files")
    return items


def save_pretrained(
    model: Any,
    directory: StrPath,
    *,
    key: SaveKey | Sequence[SaveKey] | None = None,
    sign_with: SigningKey | Sequence[SigningKey] | None = None,
    tokenizer: Any = None,
    max_shard_size: int | str = "5GB",
    metadata: dict[str, str] | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
) -> list[DirEntry]:
    """Seal ``model`` (and ``tokenizer``) into the new directory ``directory``, as
    ``model.save_pretrained`` would lay it out, every file sealed, the manifest signed by
    ``sign_with``. ``metadata`` (e.g. ``{"model": "llama-tiny", "version": "7"}``) is public and
    signed. Like ``save_pretrained``, it records ``dtype`` and ``architectures`` in
    ``model.config``. The directory appears complete or not at all."""
    _transformers()
    _check_model(model)
    log = audit_log(audit, keystore)
    info: dict[str, Any] = {}
    with audited(log, "seal-dir", directory, info):
        keys = _keys.save_keys(key, keystore)
        signers = _keys.signers(sign_with)
        configs = _configs(model)
        extra = _tokenizer_items(tokenizer, {i.source for i in configs}) if tokenizer is not None else []
        with gc_paused():
            entries = seal_items(directory, itertools.chain(configs, extra, _shards(model, max_shard_size)), keys=keys,
                                 signers=signers, metadata=metadata)  # fmt: skip
        info.update(key_ids=[_keys.key_label(k) for k in keys], signer_ids=[s.key_id for s in signers],
                    detail={"files": str(len(entries))})  # fmt: skip
    return entries


def _config(files: Mapping[str, bytes]) -> Any:
    """The model config from the (checked) ``config.json`` bytes; only model types transformers knows."""
    from transformers import CONFIG_MAPPING

    if CONFIG not in files:
        raise FormatError(f"the sealed directory holds no {CONFIG}")
    doc = strict_loads(files[CONFIG], CONFIG)
    model_type = doc.get("model_type") if isinstance(doc, dict) else None
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise FormatError(f"{CONFIG}: model_type {model_type!r} is not one transformers knows (no remote code)")
    try:
        return CONFIG_MAPPING[model_type].from_dict(doc)
    except (TypeError, ValueError, KeyError) as exc:
        raise FormatError(f"{CONFIG}: transformers refused it: {exc}") from None


def _model_class(model_class: Any, config: Any) -> Any:
    """The concrete class for ``config`` when ``model_class`` is an ``AutoModel...`` class."""
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is None:
        return model_class
    try:
        found = mapping[type(config)]
    except KeyError:
        raise InvalidArgumentError(f"{model_class.__name__} has no model for a {type(config).__name__}") from None
    if isinstance(found, (list, tuple)):
        by_name = {c.__name__: c for c in found}
        return next((by_name[a] for a in getattr(config, "architectures", None) or () if a in by_name), found[0])
    return found


def _check_loading(report: Mapping[str, Any]) -> None:
    """A sealed release must fill every weight of the model: nothing missing, extra or mis-shaped."""
    problems = {
        k: sorted(map(str, report.get(k) or ()))[:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in problems.items())
        raise IntegrityError(f"the sealed weights do not fit the model of its config.json ({detail})")


def from_pretrained(
    model_class: Any,
    directory: StrPath,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    keystore: Keystore | None = None,
    audit: AuditLog | None = None,
    **kwargs: Any,
) -> Any:
    """Load a model sealed by :func:`save_pretrained` (or ``seal-dir`` of a ``save_pretrained``
    directory): ``model_class`` is a concrete class or an ``AutoModel...`` class; ``kwargs``
    (``dtype=``, ``device_map=``, ``attn_implementation=``...) go to transformers'
    ``from_pretrained``. The manifest's signature (``trusted_signers``), the file set and every
    file read are checked, and ``min_version``/``expect_model`` as :func:`sealedckpt.load_dir`
    checks them, before any of it is used; every weight must be filled."""
    _transformers()
    refused = sorted(k for k in kwargs if k in _LOAD_KWARGS_REFUSED)
    if refused:
        raise InvalidArgumentError(
            f"{', '.join(refused)}: not accepted here (config and weights come from the sealed directory)"
        )
    want_info = kwargs.pop("output_loading_info", False)
    log = audit_log(audit, keystore)
    info: dict[str, Any] = {}
    with audited(log, "open-dir", directory, info):
        trusted = _keys.trusted(trusted_signers)
        keys = _keys.load_keys(key, keystore)
        with gc_paused():
            check = DirReleaseCheck(min_version, expect_model)
            rel = read_release(directory, keys, trusted_signers=keys_of(trusted), release=check,
                               on_verified=policy_check(trusted))  # fmt: skip
        info.update(
            digest=f"sha256:{rel.manifest.manifest_sha256}", signer_ids=[s.key_id for s in rel.manifest.signers]
        )
        config = _config(rel.files)
        if GENERATION_CONFIG in rel.files:
            from transformers import GenerationConfig

            gen = strict_loads(rel.files[GENERATION_CONFIG], GENERATION_CONFIG)
            kwargs["generation_config"] = GenerationConfig.from_dict(gen if isinstance(gen, dict) else {})
        cls = _model_class(model_class, config)
        try:
            model, report = cls.from_pretrained(None, config=config, state_dict=rel.state, output_loading_info=True,
                                                **kwargs)  # fmt: skip
        except (RuntimeError, ValueError) as exc:  # transformers' own refusal (mismatched sizes, bad kwargs)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise IntegrityError(f"the sealed weights do not fit the model of its config.json: {first}") from exc
        _check_loading(report)
        if trusted is not None:  # remembered only once the model is built and every weight filled
            trusted.remember(rel.manifest.metadata)
        model.name_or_path = os.fspath(directory)  # transformers records where a model came from
    return (model, report) if want_info else model


def tokenizer_from_pretrained(
    directory: StrPath,
    *,
    key: LoadKey | Sequence[LoadKey] | None = None,
    trusted_signers: Trusted = None,
    min_version: int | None = None,
    expect_model: str | None = None,
    keystore: Keystore | None = None,
    tokenizer_class: Any = None,
    **kwargs: Any,
) -> Any:
    """The tokenizer of a sealed directory (``AutoTokenizer`` unless ``tokenizer_class``): the
    manifest and every non-weight file are checked (the weight shards are not read), then the
    files pass through a private RAM directory to transformers' loader (no remote code)."""
    transformers = _transformers()
    if kwargs.get("trust_remote_code"):
        raise InvalidArgumentError("trust_remote_code is not accepted: a sealed directory holds no code")
    trusted = _keys.trusted(trusted_signers)
    keys = _keys.load_keys(key, keystore)
    rel = read_release(directory, keys, trusted_signers=keys_of(trusted),
                       release=DirReleaseCheck(min_version, expect_model), weights=False,
                       on_verified=policy_check(trusted))  # fmt: skip
    if not any(n in rel.files for n in _TOKENIZER_FILES):
        raise FormatError(f"{os.fspath(directory)} holds no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    cls = tokenizer_class or transformers.AutoTokenizer
    with _ram_dir() as d:
        for name, data in rel.files.items():
            if name.endswith(".index.json"):
                continue
            target = d / _safe_rel(name)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            return cls.from_pretrained(str(d), local_files_only=True, trust_remote_code=False, **kwargs)
        except (OSError, ValueError) as exc:  # transformers' refusal of the (authenticated) files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FormatError(f"transformers could not load the sealed tokenizer: {first}") from exc
