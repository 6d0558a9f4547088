"""The n-gram proposer: longest suffix n-gram first, its first earlier occurrence, k tokens."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vllm_hydra.spec_decode.ngram_proposer import NgramProposer


def _proposer(min_n: int, max_n: int, k: int) -> NgramProposer:
    spec = SimpleNamespace(
        prompt_lookup_min=min_n, prompt_lookup_max=max_n, num_speculative_tokens=k
    )
    return NgramProposer(SimpleNamespace(speculative=spec))  # type: ignore[arg-type]


def _batch(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.zeros((len(rows), 32), dtype=np.int32)
    for r, row in enumerate(rows):
        tokens[r, : len(row)] = row
    return tokens, np.array([len(r) for r in rows])


def test_proposes_what_followed_the_suffix_per_row() -> None:
    tokens, num_tokens = _batch(
        [
            [1, 2, 3, 4, 5, 1, 2, 3],  # "1 2 3" occurred at 0: propose 4 5 1
            [9, 8, 7, 6],  # no earlier occurrence of any suffix
            [5, 6, 7, 5, 6, 9, 9, 5, 6],  # "5 6" first at 0 (not 3): propose 7 5 6
            [4, 4],  # "4" at 0: only one token follows before the context ends
        ]
    )
    assert _proposer(1, 3, 3).propose(tokens, num_tokens) == [[4, 5, 1], [], [7, 5, 6], [4]]


def test_longest_ngram_wins_and_min_n_is_respected() -> None:
    # "3" alone first occurs at 0 (followed by 7); "2 3" occurs at 4 (followed by 8).
    tokens, num_tokens = _batch([[3, 7, 1, 1, 2, 3, 8, 9, 2, 3]])
    assert _proposer(1, 2, 2).propose(tokens, num_tokens) == [[8, 9]]
    assert _proposer(1, 1, 2).propose(tokens, num_tokens) == [[7, 1]]
    # With min_n=3 there is no match at all.
    assert _proposer(3, 4, 2).propose(tokens, num_tokens) == [[]]


def test_padding_after_a_row_is_never_matched() -> None:
    # Zeros after the context must not count as tokens.
    tokens, num_tokens = _batch([[0, 0, 1], [0, 5, 0, 0, 0, 0, 0, 0, 0]])
    assert _proposer(1, 2, 2).propose(tokens, num_tokens) == [[], [0, 0]]
