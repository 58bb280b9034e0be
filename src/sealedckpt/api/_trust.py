"""What a trusted load checks beyond "a trusted key signed": the stored policy (roles, scopes,
thresholds, expiry, revocation) and the remembered versions, or, for an explicit key list, the
statements' dates."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..container import Signer
from ..container.signatures import Verifier
from ..release import trustpolicy as tp
from ..stores.trust import TrustStore
from ..stores.versions import VersionMemory


@dataclass
class Trust:
    """The trusted keys handed to the container, and the checks made once signers are known."""

    keys: list[Verifier]
    policy: tp.Policy | None = None
    versions: VersionMemory | None = None
    clock: Callable[[], float] = time.time

    @classmethod
    def of_store(cls, store: TrustStore) -> Trust:
        policy = store.policy()
        return cls(policy.verifiers(), policy, VersionMemory(store.home), store.clock)

    def check(self, signers: Sequence[Signer], metadata: Mapping[str, str], allow_rollback: bool = False) -> None:
        """The policy (or the statements' dates), then the remembered version; raises
        :class:`~sealedckpt.SignatureError` / :class:`~sealedckpt.RollbackError`."""
        if self.policy is not None:
            self.policy.check(signers, metadata)
        else:
            tp.check_trusted_times(signers, self.clock())
        if self.versions is not None:
            self.versions.check(dict(metadata), allow_rollback)

    def remember(self, metadata: Mapping[str, str]) -> None:
        """After a successful load under the stored policy: remember the model's version."""
        if self.versions is None:
            return
        model, raw = metadata.get("model"), metadata.get("version")
        if model is not None and raw is not None and raw.isascii() and raw.isdigit() and len(raw) <= 18:
            self.versions.record(model, int(raw))


def keys_of(trust: Trust | None) -> list[Verifier] | None:
    return None if trust is None else trust.keys


def policy_check(trust: Trust | None, allow_rollback: bool = False) -> Callable[[Any], None] | None:
    """A callback for a verified manifest (``DirVerifyResult``): the policy check of ``trust``."""
    if trust is None:
        return None
    return lambda res: trust.check(res.signers, res.metadata, allow_rollback)
