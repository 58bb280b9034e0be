"""The trust store: named verify keys with roles, scopes, expiry and revocation, and the policy
rules a load must meet, in ``$SEALEDCKPT_HOME/trust.json`` (docs/DISTRIBUTION.md).

``load(..., trusted_signers="store")`` and ``verify(..., trusted_signers="store")`` apply it, and
``SEALEDCKPT_REQUIRE_SIGNATURE=1`` makes every ``load`` without an explicit policy apply it
(production setting). Remembered versions live next to it (:mod:`.versions`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .._env import switch
from .._fs import atomic_write
from ..container import signatures as csig
from ..container import statement as st
from ..container.signatures import Verifier
from ..crypto import COMPOSITE_ALG, textkeys
from ..errors import InvalidArgumentError, KeystoreError, SignatureError
from ..release import signatures as sigfile
from ..release import trustpolicy as tp
from ._records import read_doc, record
from .backends import check_private, default_home, home_lock
from .keystore import check_name

ENV_REQUIRE = "SEALEDCKPT_REQUIRE_SIGNATURE"
VERSION = 1
#: How each key kind's text form is read (a new signature algorithm adds its kind here).
KEY_KINDS: dict[str, Callable[[str], Verifier]] = {
    "ed25519": textkeys.verify_key_from_text,  # sckpt-vk1...
    COMPOSITE_ALG: textkeys.verify_key_from_text,  # sckpt-pqvk1... (Ed25519 + ML-DSA-65, docs/FORMAT.md §8.2)
}
KEY_TEXT: dict[str, Callable[[Any], str]] = {"ed25519": textkeys.verify_key_to_text,
                                             COMPOSITE_ALG: textkeys.verify_key_to_text}  # fmt: skip
_TOP = frozenset(("version", "keys", "rules", "clock_skew"))


def signature_required() -> bool:
    """The policy switch: every load must carry a signature by a trusted publisher.

    An unknown value (``required``, ``always``, ``y``) is a :class:`SignatureError`, never "off"."""
    return switch(ENV_REQUIRE, False, SignatureError)


def _stamp(t: float) -> str:
    return _dt.datetime.fromtimestamp(int(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Publisher:
    """One trusted key: name, text form and kind, roles, model-name scope, expiry, revocation."""

    name: str
    public: str  # sckpt-vk1... or sckpt-pqvk1...
    added: str
    kind: str = "ed25519"
    roles: list[str] = field(default_factory=lambda: [tp.PUBLISHER])
    scope: list[str] = field(default_factory=lambda: ["*"])
    expires: int | None = None  # Unix seconds
    revoked: bool = False
    revoked_by: str | None = None

    @property
    def key(self) -> Verifier:
        return KEY_KINDS[self.kind](self.public)

    def entry(self) -> tp.TrustedKey:
        return tp.TrustedKey(self.name, self.key, tuple(self.roles), tuple(self.scope), self.expires, self.revoked)


@dataclass(frozen=True)
class StoredRule:
    models: str
    require: dict[str, int]
    algs: list[str] | None = None  # signature algorithms that count; None (absent in the file): any


def _check_publisher(p: Publisher, where: str) -> None:
    if p.kind not in KEY_KINDS:
        raise KeystoreError(f"{where}: {p.name!r} has an unknown key kind {p.kind!r}")
    try:
        if p.key.alg != p.kind:  # the text form decides the algorithm; it must be the stated kind
            raise InvalidArgumentError(f"its key is a {p.key.alg} key, not {p.kind}")
        for r in p.roles:
            tp.check_role(r)
        for s in p.scope:
            tp.check_pattern(s)
    except (InvalidArgumentError, SignatureError) as exc:
        raise KeystoreError(f"{where}: {p.name!r} is invalid ({exc})") from None
    if not p.roles or not p.scope:
        raise KeystoreError(f"{where}: {p.name!r} has no role or no scope")


class TrustStore:
    """``clock`` (seconds since the epoch) is what expiry is judged against; tests inject one."""

    def __init__(self, home: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.clock = clock

    @property
    def path(self) -> Path:
        return self.home / "trust.json"

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return home_lock(self.home, "trust.lock")

    def _read(self) -> tuple[list[Publisher], list[StoredRule], int]:
        if not self.path.exists():
            return [], [], tp.DEFAULT_SKEW
        check_private(self.home, want_dir=True)
        check_private(self.path, want_dir=False)  # whoever can write it decides whom you trust
        where = f"trust store {self.path} is damaged"
        doc = read_doc(self.path, "trust store")
        if not isinstance(doc, dict) or set(doc) != _TOP:
            raise KeystoreError(f"{where}: not a {{{', '.join(sorted(_TOP))}}} object")
        if type(doc["version"]) is not int or doc["version"] != VERSION:
            raise KeystoreError(f"unsupported trust store version {doc['version']!r}")
        skew = doc["clock_skew"]
        if type(skew) is not int or not 0 <= skew <= tp.MAX_SKEW:
            raise KeystoreError(f"{where}: clock_skew must be 0..{tp.MAX_SKEW} seconds")
        if not isinstance(doc["keys"], list) or not isinstance(doc["rules"], list):
            raise KeystoreError(f"{where}: keys and rules must be lists")
        pubs = [record(Publisher, obj, where) for obj in doc["keys"]]
        for p in pubs:
            _check_publisher(p, where)
        rules = [record(StoredRule, obj, where) for obj in doc["rules"]]
        for r in rules:
            try:
                _check_rule(r.models, r.require, r.algs or ())
            except InvalidArgumentError as exc:
                raise KeystoreError(f"{where}: {exc}") from None
        return pubs, rules, skew

    def _write(self, pubs: list[Publisher], rules: list[StoredRule], skew: int) -> None:
        rows = [{k: v for k, v in asdict(r).items() if k != "algs" or v is not None} for r in rules]
        doc = {"version": VERSION, "keys": [asdict(p) for p in pubs], "rules": rows, "clock_skew": skew}
        with atomic_write(self.path, mode=0o600) as f:
            f.write(json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n")

    def publishers(self) -> list[Publisher]:
        return self._read()[0]

    def rules(self) -> list[StoredRule]:
        return self._read()[1]

    def clock_skew(self) -> int:
        return self._read()[2]

    def add(
        self,
        name: str,
        key: Verifier,
        *,
        roles: Sequence[str] = (tp.PUBLISHER,),
        scope: Sequence[str] = ("*",),
        expires: int | None = None,
    ) -> Publisher:
        """Trust ``key`` as ``name`` with ``roles`` for the model-name glob patterns ``scope``."""
        check_name(name)
        for r in roles:
            tp.check_role(r)
        for s in scope:
            tp.check_pattern(s)
        if not roles or not scope:
            raise InvalidArgumentError("a trusted key needs at least one role and one scope pattern")
        if key.alg not in KEY_TEXT:
            raise InvalidArgumentError(f"keys of kind {key.alg!r} cannot be trusted here")
        with self._locked():
            pubs, rules, skew = self._read()
            text = KEY_TEXT[key.alg](key)
            if any(p.name == name for p in pubs):
                raise KeystoreError(f"a key named {name!r} is already trusted")
            if any(p.public == text for p in pubs):
                raise KeystoreError(
                    f"this key is already trusted (as {next(p.name for p in pubs if p.public == text)!r})"
                )
            pub = Publisher(name, text, _stamp(self.clock()), key.alg, sorted(set(roles)), list(dict.fromkeys(scope)),
                            expires)  # fmt: skip
            self._write([*pubs, pub], rules, skew)
        return pub

    def remove(self, name: str) -> Publisher:
        with self._locked():
            pubs, rules, skew = self._read()
            hit = self._named(pubs, name)
            self._write([p for p in pubs if p.name != name], rules, skew)
        return hit

    @staticmethod
    def _named(pubs: list[Publisher], name: str) -> Publisher:
        hit = [p for p in pubs if p.name == name]
        if not hit:
            raise KeystoreError(f"no trusted key named {name!r}", hint="see `sealedckpt trust show`")
        return hit[0]

    def revoke(self, name: str, by: str = "local") -> Publisher:
        """Mark ``name`` revoked: any file or directory it signed is refused under the stored policy."""
        with self._locked():
            pubs, rules, skew = self._read()
            hit = replace(self._named(pubs, name), revoked=True, revoked_by=by)
            self._write([hit if p.name == name else p for p in pubs], rules, skew)
        return hit

    def set_rule(self, models: str, require: dict[str, int], algs: Sequence[str] = ()) -> StoredRule:
        """Set (or replace) the thresholds for the model pattern ``models``; with ``algs``, only
        signatures made with one of those algorithms count (e.g. ``["ed25519+mldsa65"]``)."""
        _check_rule(models, require, algs)
        with self._locked():
            pubs, rules, skew = self._read()
            rule = StoredRule(models, dict(sorted(require.items())), sorted(set(algs)) if algs else None)
            self._write(pubs, [*(r for r in rules if r.models != models), rule], skew)
        return rule

    def remove_rule(self, models: str) -> None:
        with self._locked():
            pubs, rules, skew = self._read()
            if not any(r.models == models for r in rules):
                raise KeystoreError(f"no policy rule for {models!r}", hint="see `sealedckpt trust show`")
            self._write(pubs, [r for r in rules if r.models != models], skew)

    def set_clock_skew(self, seconds: int) -> None:
        if not 0 <= seconds <= tp.MAX_SKEW:
            raise InvalidArgumentError(f"clock skew must be 0..{tp.MAX_SKEW} seconds")
        with self._locked():
            pubs, rules, _ = self._read()
            self._write(pubs, rules, seconds)

    def policy(self) -> tp.Policy:
        """The stored keys and rules, judged at this store's clock."""
        pubs, rules, skew = self._read()
        if not pubs:
            raise SignatureError(
                "a trusted signature is required but the trust store is empty",
                hint="add a publisher with `sealedckpt trust add NAME sckpt-vk1... --role publisher`",
            )
        return tp.Policy([p.entry() for p in pubs], [tp.Rule(r.models, r.require, tuple(r.algs or ())) for r in rules],
                         self.clock, skew)  # fmt: skip

    def keys(self) -> list[Verifier]:
        return self.policy().verifiers()

    def import_revocation(self, raw: bytes) -> Publisher:
        """Apply a signed revocation statement (:func:`revocation_statement`): it must be signed by
        a trusted, unrevoked, unexpired publisher, revoking itself or a key within its scope."""
        env = sigfile.parse_envelope(raw)
        vk, stmt = csig.verify_statement(0, env.alg, env.public_key, env.statement, env.signature)
        if stmt.type != st.REVOCATION:
            raise SignatureError(f"not a revocation statement (it is a {stmt.type})")
        with self._locked():
            pubs, rules, skew = self._read()
            now = self.clock()
            signer = next((p for p in pubs if p.kind == vk.alg and p.key.to_bytes() == vk.to_bytes()), None)
            if signer is None or signer.revoked or tp.PUBLISHER not in signer.roles:
                raise SignatureError(f"the revocation is signed by {vk.key_id}, not a trusted unrevoked publisher")
            if signer.expires is not None and now > signer.expires + skew:
                raise SignatureError(f"the revocation is signed by {signer.name}, whose key expired")
            if stmt.signed_at > now + skew:
                raise SignatureError("the revocation statement is dated in the future")
            target = next((p for p in pubs if st.key_subject(p.kind, p.key.to_bytes()) == stmt.subject), None)
            if target is None:
                raise KeystoreError("the revoked key is not in this trust store: nothing to revoke")
            if target.name != signer.name and "*" not in signer.scope and not set(target.scope) <= set(signer.scope):
                raise SignatureError(f"{signer.name} may not revoke {target.name}: its scope does not cover "
                                     f"{', '.join(target.scope)}")  # fmt: skip
            hit = replace(target, revoked=True, revoked_by=signer.name)
            self._write([hit if p.name == target.name else p for p in pubs], rules, skew)
        return hit


def _check_rule(models: str, require: dict[str, int], algs: Sequence[str] = ()) -> None:
    tp.check_pattern(models)
    for alg in algs:
        if alg not in KEY_KINDS:
            raise InvalidArgumentError(f"unknown signature algorithm {alg!r} (known: {', '.join(KEY_KINDS)})")
    if not require:
        raise InvalidArgumentError("a policy rule needs at least one ROLE=N requirement")
    for role, n in require.items():
        tp.check_role(role)
        if type(n) is not int or not 0 <= n <= tp.MAX_THRESHOLD:
            raise InvalidArgumentError(f"threshold for {role} must be 0..{tp.MAX_THRESHOLD}")


def revocation_statement(
    signer: csig.StatementSigner, revoked: Verifier, now: Callable[[], float] = time.time
) -> bytes:
    """A signed revocation of ``revoked`` by ``signer`` (a publisher), as a file to import."""
    stmt = st.Statement(st.REVOCATION, st.key_subject(revoked.alg, revoked.to_bytes()), int(now()))
    raw, sig = csig.sign_statement(signer, stmt)
    return sigfile.dump_envelope(sigfile.ManifestSignature(signer.alg, signer.public.to_bytes(), raw, sig))
