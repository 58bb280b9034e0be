"""Every example in README.md and docs/*.md runs, top to bottom, and shows what it prints.

The convention for writing a tested example is in tests/docs_runner.py and docs/CLI.md
("How the examples are tested").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docs_runner import ROOT, describe, mask, matches, parse, run_document

from sealedckpt.crypto import textkeys

DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]

# Blocks marked <!-- docs-test: skip REASON --> per document (the reason is beside each one).
SKIPPED = {
    "README.md": 1,  # ./run demo / ./run test: the demo trains for a while; the other is this suite
    "docs/PERFORMANCE.md": 2,  # the benchmarks take minutes (bench_save_load, bench_hf)
    "docs/TRAINING.md": 1,  # the DCP example needs torchrun with 2 processes (tests/test_dcp_ranks.py runs it)
}


def _name(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_examples_run_and_show_their_output(doc: Path, tmp_path: Path) -> None:
    results, skipped = run_document(doc, tmp_path)
    bad = [r for r in results if not r.ok]
    assert not bad, describe(bad[0])
    assert len(skipped) == SKIPPED.get(_name(doc), 0), [(b.line, b.skip) for b in skipped]


def test_every_document_with_examples_runs_some() -> None:
    for doc in DOCS:
        blocks = parse(doc)
        runnable = ("README.md", "docs/CLI.md", "docs/KEYS.md", "docs/DISTRIBUTION.md", "docs/MIGRATING.md",
                    "docs/TRAINING.md")  # fmt: skip
        if _name(doc) in runnable:
            assert sum(b.skip is None and not b.hidden for b in blocks) >= 2, doc


_KEYISH = re.compile(r"(?i)sckpt(?:-vk|-symmetric-key-|-signing-key-|-secret-key-)?1[0-9a-z]{8,}")


def _parses_as_key(token: str) -> bool:
    for decode in (textkeys.public_from_text, textkeys.secret_from_text):
        try:
            decode(token)
        except ValueError:
            continue
        return True
    return False


def test_no_real_keys_in_docs() -> None:
    """A key pasted from the docs would encrypt to, or trust, whoever wrote them."""
    found = [
        f"{_name(doc)}: {tok}"
        for doc in [*DOCS, ROOT / "examples" / "README.md"]
        if doc.exists()
        for tok in _KEYISH.findall(doc.read_text(encoding="utf-8"))
        if _parses_as_key(tok)
    ]
    assert not found, found


def test_key_finder_sees_real_keys() -> None:
    import sealedckpt

    real = [
        textkeys.public_to_text(sealedckpt.SigningKey.generate().public),
        textkeys.public_to_text(sealedckpt.RecipientKey.generate().public),
        textkeys.secret_to_text(sealedckpt.SymmetricKey.generate()),
    ]
    for key in real:
        (tok,) = _KEYISH.findall(f"see `{key}`.")
        assert _parses_as_key(tok)
    assert not _parses_as_key("sckpt1recipient")
    assert not _parses_as_key(real[0][:-1] + ("q" if real[0][-1] != "q" else "p"))


def test_masks_and_wildcards() -> None:
    assert mask("id 5c1c4b63391038b6 at 2026-11-30T09:17:12Z, team@20261130T091715") == "id <id> at <time>, team@<time>"
    assert mask("blake3:" + "ab" * 32) == "blake3:<digest>"
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "d"], ["a", "d"])
    assert matches(["x = 1..."], ["x = 12"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert not matches(["a"], ["a", "b"])


def test_a_wrong_document_fails(tmp_path: Path) -> None:
    """The runner must catch wrong output, a wrong exit status, a failing sh block and a wrong value."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```console\n$ echo hi\nhello\n```\n"
        "```console\n$ false\n```\n"
        "```console\n$ sealedckpt key show nope\n"
        "sealedckpt: error: no key named 'nope' in <dir>/home/.local/share/sealedckpt\n...\n[exit 6]\n```\n"
        "```console\n$ sealedckpt key gen --name k\n"
        "generated symmetric key k (id <id>) in the file store, default\n```\n"
        "```python\nx = 1 + 1\nx  # -> 3\n```\n"
    )
    scratch = tmp_path / "run"
    scratch.mkdir()
    results, _ = run_document(doc, scratch, stop=False)
    assert [r.ok for r in results] == [False, False, True, True, False]
    assert results[-1].actual == ["2"]

    bad_sh = tmp_path / "sh.md"
    bad_sh.write_text("```sh\ntrue\nfalse\necho never\n```\n")
    scratch2 = tmp_path / "run2"
    scratch2.mkdir()
    with pytest.raises(AssertionError, match="shell exited"):
        run_document(bad_sh, scratch2)
