"""Comments and docstrings cite only what a clone of the repository holds: the paper, the reference code, or
a page under docs/. Background notes kept outside the repository (the project's method, corruption,
ecosystem, performance and architecture notes, the interface contract and its numbered sections) are not
there for a maintainer to follow, so naming them is a failure here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("qact_cli", "benchmarks", "tests")
TEXT = {".py", ".yaml", ".yml", ".toml", ".txt", ".md", ".cfg", ".ini"}

# The outside notes by name (a docs/ page of the same name is in the repository and allowed), the
# contract's section marks, and paths that lead out of the repository.
OUTSIDE = re.compile(
    r"(?<![\w-])(?<!docs/)(?:qact-method|corruptions|ecosystem|performance|architecture|interface)\.md\b"
    r"|\binterface\s*§"
    r"|\.\./shared\b|/work/shared\b"
)
DOCS_PAGE = re.compile(r"\bdocs/([\w.-]+\.md)\b")


def _files():
    me = Path(__file__).resolve()
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in TEXT and path.is_file() and path.resolve() != me and "__pycache__" not in path.parts:
                yield path


def _hits(pattern: re.Pattern, text: str):
    return [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in pattern.finditer(text)]


def test_the_pattern_catches_outside_notes_and_spares_docs_pages():
    caught = ["see qact-method.md §5", "(corruptions.md §3.1)", "ecosystem.md", "interface §4", "interface§6",
              "../shared/reference/performance.md", "shared/reference/qact-method.md", "/work/shared/spec", "architecture.md", "interface.md"]
    spared = ["docs/corruptions.md", "docs/corruptions.md#randomness", "compare.md", "out.md", "my-corruptions.md",
              "the interface in the docstrings", "docs/performance.md"]
    assert all(OUTSIDE.search(s) for s in caught), [s for s in caught if not OUTSIDE.search(s)]
    assert not any(OUTSIDE.search(s) for s in spared), [s for s in spared if OUTSIDE.search(s)]


def test_no_citation_of_files_outside_the_repository():
    hits = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in _files()
            for line, what in _hits(OUTSIDE, path.read_text(encoding="utf-8", errors="replace"))]
    assert not hits, "cite the paper, the reference code or a docs/ page instead:\n" + "\n".join(hits)


def test_cited_docs_pages_exist():
    missing = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in _files()
               for line, what in _hits(DOCS_PAGE, path.read_text(encoding="utf-8", errors="replace"))
               if not (ROOT / what).is_file()]
    assert not missing, "these docs/ pages are cited but not in the repository:\n" + "\n".join(missing)


def test_tests_share_helpers_through_fixture_modules_not_other_test_files():
    # tests/<folder>/ mirror the package; a test file that imports another test file runs only when pytest
    # happened to import that one first (its folder then on sys.path): shared helpers live in tests/fixtures_*.py
    importing = re.compile(r"^\s*(?:from|import)\s+test_\w+", re.M)
    found = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "tests").rglob("test_*.py"))
             for line, _ in _hits(importing, p.read_text(encoding="utf-8"))]
    assert not found, "test files importing other test files: " + ", ".join(found)
