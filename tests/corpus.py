"""Where the shared real-world OVF corpus lives (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ovf-corpus"


def corpus_files() -> list[Path]:
    """Every descriptor in the corpus, sorted; empty if ../shared is absent."""
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix.lower() == ".ovf")


def corpus_file(relative: str) -> Path:
    return CORPUS / relative
