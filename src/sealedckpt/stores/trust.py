"""Trusted publishers: named Ed25519 verify keys in ``$SEALEDCKPT_HOME/trust.json``.

``load(..., trusted_signers="store")`` and ``verify(..., trusted_signers="store")`` use them, and
``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes every ``load`` without an explicit policy require a
signature by one of them (production setting).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .._env import switch
from .._fs import atomic_write
from ..crypto import VerifyKey, textkeys
from ..errors import KeystoreError, SignatureError
from ._records import read_records
from .backends import check_private, default_home, home_lock
from .keystore import check_name

ENV_REQUIRE = "SEALEDCKPT_REQUIRE_SIGNATURE"


def signature_required() -> bool:
    """The policy switch: every load must carry a signature by a trusted publisher.

    An unknown value (``required``, ``always``, ``y``) is a :class:`SignatureError`, never "off"."""
    return switch(ENV_REQUIRE, False, SignatureError)


@dataclass(frozen=True)
class Publisher:
    name: str
    public: str  # sckpt-vk1...
    added: str

    @property
    def key(self) -> VerifyKey:
        return textkeys.verify_key_from_text(self.public)


class TrustStore:
    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()

    @property
    def path(self) -> Path:
        return self.home / "trust.json"

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return home_lock(self.home, "trust.lock")

    def publishers(self) -> list[Publisher]:
        if not self.path.exists():
            return []
        check_private(self.home, want_dir=True)
        check_private(self.path, want_dir=False)  # whoever can write it decides whom you trust
        out = read_records(self.path, "trust store", 1, "publishers", Publisher)
        for p in out:
            try:
                p.key  # noqa: B018 - validates the stored text form
            except ValueError as exc:  # textkeys' typed InvalidArgumentError
                raise KeystoreError(
                    f"trust store {self.path} is damaged: {p.name!r} is not a verify key ({exc})"
                ) from None
        return out

    def _write(self, pubs: list[Publisher]) -> None:
        doc = {"version": 1, "publishers": [asdict(p) for p in pubs]}
        with atomic_write(self.path, mode=0o600) as f:
            f.write(json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n")

    def add(self, name: str, key: VerifyKey) -> Publisher:
        check_name(name)
        with self._locked():
            pubs = self.publishers()
            text = textkeys.verify_key_to_text(key)
            if any(p.name == name for p in pubs):
                raise KeystoreError(f"a publisher named {name!r} is already trusted")
            if any(p.public == text for p in pubs):
                raise KeystoreError(
                    f"this key is already trusted (as {next(p.name for p in pubs if p.public == text)!r})"
                )
            pub = Publisher(name, text, _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._write([*pubs, pub])
        return pub

    def remove(self, name: str) -> Publisher:
        with self._locked():
            pubs = self.publishers()
            hit = [p for p in pubs if p.name == name]
            if not hit:
                raise KeystoreError(f"no trusted publisher named {name!r}", hint="see `sealedckpt trust list`")
            self._write([p for p in pubs if p.name != name])
        return hit[0]

    def keys(self) -> list[VerifyKey]:
        keys = [p.key for p in self.publishers()]
        if not keys:
            raise SignatureError(
                "a trusted signature is required but the trust store is empty",
                hint="add a publisher with `sealedckpt trust add NAME sckpt-vk1...`",
            )
        return keys
