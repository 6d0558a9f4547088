"""Top-k / top-p truncation and random sampling by the exponential race (vLLM's
topk_topp_sampler)."""

from __future__ import annotations

import torch


def apply_top_k(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (ties with the k-th are kept too); k = vocab is off.

    In place on `logits` [n, vocab]; `k` is [n] int64 in [1, vocab].
    """
    vocab_size = logits.shape[1]
    off = k >= vocab_size
    # Rows with top-k off would force a full sort; give them k=1 and a -inf threshold instead.
    k = k.masked_fill(off, 1)
    top_values = logits.topk(int(k.max()), dim=-1).values
    threshold = top_values.gather(1, (k - 1).unsqueeze(1))
    threshold.masked_fill_(off.unsqueeze(1), float("-inf"))
    return logits.masked_fill_(logits < threshold, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus).

    In place on `logits` [n, vocab]; `p` is [n] in (0, 1], 1 = off. Drops, in ascending order,
    the tokens whose cumulative probability stays <= 1 - p, and always keeps the top token.
    """
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - p).unsqueeze(1)
    drop[:, -1] = False
    drop_in_vocab_order = torch.zeros_like(drop).scatter_(1, sorted_ids, drop)
    return logits.masked_fill_(drop_in_vocab_order, float("-inf"))


def random_sample(probs: torch.Tensor, generators: dict[int, torch.Generator]) -> torch.Tensor:
    """One token per row of `probs` [n, vocab]: argmax(probs / E) with E ~ Exponential(1).

    argmax_i(p_i / E_i) picks token i with probability p_i (the exponential race), and needs
    no cumulative sum. Rows with their own generator draw E from it, so a seeded request gets
    the same tokens whatever else is in the batch; other rows use the global RNG.
    """
    q = torch.empty_like(probs)
    if len(generators) != probs.shape[0]:
        q.exponential_()
    for row, generator in generators.items():
        q[row].exponential_(generator=generator)
    # An exact 0 draw would make 0/0 = NaN on a masked token, which argmax would pick.
    q.clamp_(min=torch.finfo(q.dtype).tiny)
    return probs.div_(q).argmax(dim=-1)
