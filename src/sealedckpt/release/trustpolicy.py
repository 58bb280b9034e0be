"""Trust policy: which signed statements a load requires (docs/DISTRIBUTION.md, "Trust policy").

Each trusted key has roles (``publisher``, ``auditor``, ...), a scope (model-name glob patterns it
may sign for), an optional expiry and a revoked flag. Rules state, per model pattern, how many
distinct keys of each role must have signed (thresholds, as TUF's per-role ``threshold``). A role
counts only on the statement types it makes: a publisher on a ``release``, an auditor on an
``audit`` or ``counter-signature``. Every load needs at least one publisher release.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..container import Signer
from ..container import statement as st
from ..container.signatures import Verifier
from ..errors import InvalidArgumentError, SignatureError

PUBLISHER, AUDITOR = "publisher", "auditor"
#: The statement types a role's signature counts on; any other role counts on any non-revocation type.
ROLE_TYPES: dict[str, frozenset[str]] = {
    PUBLISHER: frozenset((st.RELEASE,)),
    AUDITOR: frozenset((st.AUDIT, st.COUNTER)),
}
DEFAULT_SKEW = 300
MAX_SKEW = 86_400
MAX_THRESHOLD = 16
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def check_role(role: str) -> str:
    if not _ROLE.fullmatch(role):
        raise InvalidArgumentError(f"bad role {role!r}: lowercase letters, digits, '-' or '_' (up to 32)")
    return role


def check_pattern(pattern: str) -> str:
    if not _PATTERN.fullmatch(pattern):
        raise InvalidArgumentError(f"bad model pattern {pattern!r}: 1-256 printable characters")
    return pattern


def in_scope(model: str | None, scopes: Sequence[str]) -> bool:
    """Whether ``model`` matches one of the glob ``scopes`` (a release without a model name only
    matches ``*``)."""
    if model is None:
        return "*" in scopes
    return any(fnmatch.fnmatchcase(model, p) for p in scopes)


def when(t: int | float) -> str:
    return _dt.datetime.fromtimestamp(int(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key: Verifier
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    expires: int | None = None
    revoked: bool = False


@dataclass(frozen=True)
class Rule:
    """For models matching ``models``: at least ``require[role]`` distinct keys of each role,
    counting only signatures made with one of ``algs`` when it is not empty."""

    models: str
    require: Mapping[str, int]
    algs: tuple[str, ...] = ()  # signature algorithms that count (empty: any), e.g. ("ed25519+mldsa65",)


@dataclass
class Policy:
    """The stored policy, evaluated at ``clock()`` with ``skew`` seconds of allowance."""

    keys: list[TrustedKey]
    rules: list[Rule]
    clock: Callable[[], float]
    skew: int = DEFAULT_SKEW
    notes: list[str] = field(default_factory=list)

    def verifiers(self) -> list[Verifier]:
        """Every stored key (the container marks their signatures trusted; :meth:`check` then
        refuses revoked keys and ignores expired or out-of-scope ones)."""
        return [k.key for k in self.keys]

    def _matching(self, model: str | None) -> list[Rule]:
        if model is None:
            return [r for r in self.rules if r.models == "*"]
        return [r for r in self.rules if fnmatch.fnmatchcase(model, r.models)]

    def requirements(self, model: str | None) -> dict[str, int]:
        """The thresholds for ``model``: the largest of every matching rule, publisher >= 1 always."""
        need = {PUBLISHER: 1}
        for r in self._matching(model):
            for role, n in r.require.items():
                need[role] = max(need.get(role, 0), n)
        return need

    def allowed_algs(self, model: str | None) -> frozenset[str] | None:
        """The signature algorithms that count for ``model``: those every matching rule that names
        some allows (the strictest wins); None when no matching rule restricts them."""
        allowed: frozenset[str] | None = None
        for r in self._matching(model):
            if r.algs:
                allowed = frozenset(r.algs) if allowed is None else allowed & frozenset(r.algs)
        return allowed

    def _find(self, s: Signer) -> TrustedKey | None:
        raw = (s.alg, s.public_key.to_bytes())
        return next((k for k in self.keys if (k.key.alg, k.key.to_bytes()) == raw), None)

    def check(self, signers: Sequence[Signer], metadata: Mapping[str, str]) -> None:
        """Raise :class:`SignatureError` naming the first unmet requirement."""
        now = self.clock()
        model = metadata.get("model")
        counted: dict[str, set[str]] = {}
        ignored: list[str] = []
        algs = self.allowed_algs(model)
        for s in signers:
            k = self._find(s)
            if k is None:
                continue
            if k.revoked:
                raise SignatureError(f"signed by the revoked key {k.name!r} ({k.key.key_id})",
                                     hint="a revoked key's signatures are refused, whatever else signed")  # fmt: skip
            check_times(s, k.name, now, self.skew)
            if k.expires is not None and now > k.expires + self.skew:
                ignored.append(f"{k.name}: key expired {when(k.expires)}")
                continue
            if not in_scope(model, k.scopes):
                ignored.append(f"{k.name}: model {model!r} is outside its scope {', '.join(k.scopes)}")
                continue
            if algs is not None and s.alg not in algs:
                ignored.append(f"{k.name}: signed with {s.alg}, the policy for {model!r} requires "
                               f"{' or '.join(sorted(algs))}")  # fmt: skip
                continue
            for role in k.roles:
                if s.statement.type in ROLE_TYPES.get(role, frozenset(st.TYPES) - {st.REVOCATION}):
                    counted.setdefault(role, set()).add(k.name)
        for role, n in sorted(self.requirements(model).items(), key=lambda rn: (rn[0] != PUBLISHER, rn[0])):
            have = sorted(counted.get(role, ()))
            if len(have) < n:
                kinds = "/".join(sorted(ROLE_TYPES.get(role, frozenset({"any"}))))
                why = f"; not counted: {'; '.join(ignored)}" if ignored else ""
                raise SignatureError(
                    f"trust policy not met for model {model!r}: missing requirement {role}>={n} "
                    f"({kinds} statements by in-scope {role} keys: {len(have)}"
                    f"{' (' + ', '.join(have) + ')' if have else ''}){why}",
                    hint="see `sealedckpt trust show`",
                )


def check_times(s: Signer, name: str, now: float, skew: int) -> None:
    """A statement signed in the future, or past its ``expires_at``, is refused (``skew`` seconds allowed)."""
    t = s.statement
    if t.signed_at > now + skew:
        raise SignatureError(f"the statement signed by {name} is dated {when(t.signed_at)}, in the future "
                             f"(clock skew allowance {skew}s)")  # fmt: skip
    if t.expires_at is not None and now > t.expires_at + skew:
        raise SignatureError(f"the {t.type} statement signed by {name} expired at {when(t.expires_at)}",
                             hint="ask the publisher for a fresh release")  # fmt: skip


def check_trusted_times(signers: Sequence[Signer], now: float, skew: int = DEFAULT_SKEW) -> None:
    """Expiry and future dates of every trusted signer's statement (an explicit key list)."""
    for s in signers:
        if s.trusted:
            check_times(s, s.key_id, now, skew)
