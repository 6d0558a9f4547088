"""docs/benchmarks.md is what `make bench` writes: its tables, then docs/benchmarks-notes.md
verbatim. A note edited in one file only would be lost (or kept stale) at the next run."""

from __future__ import annotations

from vllm_hydra.benchmarks.report import DOC, NOTES


def test_benchmarks_md_ends_with_the_notes_verbatim() -> None:
    notes = NOTES.read_text()
    assert notes.strip(), "the notes file is the source of the notes"
    assert DOC.read_text().endswith(notes), "edit docs/benchmarks-notes.md, then copy it over"
