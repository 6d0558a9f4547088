"""`NgramProposer`: prompt lookup decoding (vLLM's ngram method), vectorised over the batch.

For each request, find the longest suffix n-gram of its tokens (n from prompt_lookup_max down
to prompt_lookup_min) that occurred earlier in its prompt or output, and propose the k tokens
that followed its first occurrence. Free to run, and strong wherever outputs copy their
context (summaries quoting the source, code edits, retrieval answers, repetitive text).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vllm_hydra.config.vllm import VllmConfig


class NgramProposer:
    def __init__(self, vllm_config: VllmConfig) -> None:
        spec = vllm_config.speculative
        self.min_n = spec.prompt_lookup_min
        self.max_n = spec.prompt_lookup_max
        self.k = spec.num_speculative_tokens

    def propose(self, token_ids: np.ndarray, num_tokens: np.ndarray) -> list[list[int]]:
        """Drafts (up to k tokens, possibly none) for each row of `token_ids` [n, width],
        whose first `num_tokens[r]` entries are row r's context."""
        n = len(num_tokens)
        if n == 0:
            return []
        width = int(num_tokens.max())
        tokens = token_ids[:n, :width]
        draft_start = np.full(n, -1, dtype=np.int64)
        for size in range(min(self.max_n, width - 1), self.min_n - 1, -1):
            matched = _first_match(tokens, num_tokens, size)
            new = (draft_start < 0) & (matched >= 0)
            draft_start[new] = matched[new] + size
        return [
            tokens[r, s : min(s + self.k, int(num_tokens[r]))].tolist() if s >= 0 else []
            for r, s in enumerate(draft_start.tolist())
        ]


def _first_match(tokens: np.ndarray, num_tokens: np.ndarray, size: int) -> np.ndarray:
    """Per row, where the row's last `size` tokens first occur earlier in it (-1: nowhere)."""
    windows = sliding_window_view(tokens, size, axis=1)  # [n, width - size + 1, size]
    suffix_index = np.maximum(num_tokens[:, None] - size + np.arange(size), 0)
    suffix = np.take_along_axis(tokens, suffix_index, axis=1)
    match = (windows == suffix[:, None, :]).all(axis=-1)
    # An occurrence must start before the suffix itself does.
    match &= np.arange(windows.shape[1])[None, :] < (num_tokens - size)[:, None]
    first = match.argmax(axis=1)
    return np.where(match.any(axis=1), first, -1)
