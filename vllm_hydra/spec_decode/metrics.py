"""`SpecDecodingStats`: how many proposals the target accepted (vLLM's spec_decode/metrics.py).

Totals since the engine started, carried in `SchedulerStats`; the loggers take differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecDecodingStats:
    num_spec_tokens: int = 0  # k: the positions tracked in num_accepted_tokens_per_pos
    num_drafts: int = 0  # verification steps of one request that carried drafts
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    # [k] how often the draft token at position i was accepted.
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)

    @classmethod
    def new(cls, num_spec_tokens: int) -> SpecDecodingStats:
        return cls(num_spec_tokens, num_accepted_tokens_per_pos=[0] * num_spec_tokens)

    def observe_draft(self, num_draft_tokens: int, num_accepted_tokens: int) -> None:
        self.num_drafts += 1
        self.num_draft_tokens += num_draft_tokens
        self.num_accepted_tokens += num_accepted_tokens
        for pos in range(num_accepted_tokens):
            self.num_accepted_tokens_per_pos[pos] += 1

    def copy(self) -> SpecDecodingStats:
        return SpecDecodingStats(
            self.num_spec_tokens,
            self.num_drafts,
            self.num_draft_tokens,
            self.num_accepted_tokens,
            list(self.num_accepted_tokens_per_pos),
        )

    def minus(self, earlier: SpecDecodingStats | None) -> SpecDecodingStats:
        """What happened since `earlier` (a previous snapshot of the same totals)."""
        if earlier is None:
            return self.copy()
        return SpecDecodingStats(
            self.num_spec_tokens,
            self.num_drafts - earlier.num_drafts,
            self.num_draft_tokens - earlier.num_draft_tokens,
            self.num_accepted_tokens - earlier.num_accepted_tokens,
            [
                a - b
                for a, b in zip(
                    self.num_accepted_tokens_per_pos,
                    earlier.num_accepted_tokens_per_pos,
                    strict=True,
                )
            ],
        )

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per verification step: 1 + accepted drafts per draft."""
        return 1.0 + (self.num_accepted_tokens / self.num_drafts if self.num_drafts else 0.0)

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0
