"""`KVCacheManager`: each request's block table, prefix-cache lookups and slot allocation."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from vllm_hydra.core.block_pool import BlockPool
from vllm_hydra.core.kv_cache_utils import KVCacheBlock, extend_block_hashes
from vllm_hydra.core.request import Request


@dataclass
class PrefixCacheStats:
    """Prefix-cache lookups since start, in tokens (vLLM's prefix_cache_queries / _hits)."""

    requests: int = 0
    queries: int = 0
    hits: int = 0


def cdiv(a: int, b: int) -> int:
    return -(a // -b)


class KVCacheManager:
    """One full-attention KV cache group: every layer shares the same block table per request."""

    def __init__(
        self, num_blocks: int, block_size: int, enable_caching: bool, max_model_len: int
    ) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.max_model_len = max_model_len
        self.block_pool = BlockPool(num_blocks, enable_caching)
        self.req_to_blocks: defaultdict[str, list[KVCacheBlock]] = defaultdict(list)
        # How many leading blocks of each request are registered in the prefix cache.
        self.num_cached_block: dict[str, int] = {}
        self.prefix_cache_stats = PrefixCacheStats()
        self._pending_lookups: dict[str, tuple[int, int]] = {}

    @property
    def usage(self) -> float:
        return self.block_pool.get_usage()

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """The longest cached prefix of a request not yet scheduled: (blocks, tokens).

        The hit stops one token short of the request's tokens, rounded down to whole blocks: the
        last token must be run through the model to get the logits of the next one.
        The lookup (request.num_tokens queried, the hit tokens) enters `prefix_cache_stats`
        when allocate_slots then admits the request (each admission, resumes included).
        """
        # Prompt logprobs need every prompt token's logits, so such requests skip the cache.
        if not self.enable_caching or request.sampling_params.prompt_logprobs is not None:
            return [], 0
        self._update_block_hashes(request)
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        blocks: list[KVCacheBlock] = []
        for block_hash in request.block_hashes[:max_hit_blocks]:
            block = self.block_pool.get_cached_block(block_hash)
            if block is None:
                break
            blocks.append(block)
        num_hit_tokens = len(blocks) * self.block_size
        # Counted once allocate_slots admits the request: a request that does not fit is looked
        # up again next step, and counting every attempt would skew the hit rate.
        self._pending_lookups[request.request_id] = (request.num_tokens, num_hit_tokens)
        return blocks, num_hit_tokens

    def _record_lookup(self, request_id: str) -> None:
        lookup = self._pending_lookups.pop(request_id, None)
        if lookup is not None:
            self.prefix_cache_stats.requests += 1
            self.prefix_cache_stats.queries += lookup[0]
            self.prefix_cache_stats.hits += lookup[1]

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: list[KVCacheBlock] | None = None,
        num_new_computed_tokens: int = 0,
        num_lookahead_tokens: int = 0,
    ) -> list[int] | None:
        """Make room for `num_new_tokens` more tokens; None (and no change) if blocks run out.

        `new_computed_blocks` are prefix-cache hits covering `num_new_computed_tokens` tokens of
        a request being admitted. Returns the ids appended to the request's block table (hits
        first, then fresh blocks). Full blocks are registered in the prefix cache right away:
        the step about to run writes them before any later step can read them.
        `num_lookahead_tokens` more slots are allocated (not cached): a draft model writes
        the KV of its proposals there.
        """
        new_computed_blocks = new_computed_blocks or []
        req_blocks = self.req_to_blocks[request.request_id]
        num_computed = request.num_computed_tokens + num_new_computed_tokens
        num_required = cdiv(num_computed + num_new_tokens + num_lookahead_tokens, self.block_size)
        num_new_blocks = max(num_required - len(req_blocks) - len(new_computed_blocks), 0)
        # Free hit blocks leave the free queue when touched, so they cannot also be handed out.
        num_free_hits = sum(1 for b in new_computed_blocks if b.ref_cnt == 0)
        if num_new_blocks > self.block_pool.get_num_free_blocks() - num_free_hits:
            if not req_blocks:
                del self.req_to_blocks[request.request_id]
            return None
        if new_computed_blocks:
            self.block_pool.touch(new_computed_blocks)
            req_blocks.extend(new_computed_blocks)
            self.num_cached_block.setdefault(request.request_id, len(req_blocks))
        self._record_lookup(request.request_id)
        new_blocks = self.block_pool.get_new_blocks(num_new_blocks)
        req_blocks.extend(new_blocks)
        self._cache_blocks(request, min(num_computed + num_new_tokens, request.num_tokens))
        return [b.block_id for b in new_computed_blocks + new_blocks]

    def _cache_blocks(self, request: Request, num_tokens: int) -> None:
        if not self.enable_caching:
            return
        self._update_block_hashes(request)
        num_cached = self.num_cached_block.get(request.request_id, 0)
        num_full = num_tokens // self.block_size
        if num_full <= num_cached:
            return
        self.block_pool.cache_full_blocks(
            self.req_to_blocks[request.request_id], request.block_hashes, num_cached, num_full
        )
        self.num_cached_block[request.request_id] = num_full

    def _update_block_hashes(self, request: Request) -> None:
        # The adapter changes every layer's K/V: its blocks are its own (vLLM's extra_keys).
        lora = request.lora_request
        extra_keys = (lora.lora_name,) if lora is not None else None
        extend_block_hashes(
            request.block_hashes, request.all_token_ids, self.block_size, extra_keys
        )

    def free(self, request: Request) -> None:
        """Release a request's blocks, tail first, so its prefix is the last to be evicted."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self.num_cached_block.pop(request.request_id, None)
        self._pending_lookups.pop(request.request_id, None)
        self.block_pool.free_blocks(reversed(blocks))

    def get_block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self.req_to_blocks.get(request_id, [])]

    def reset_prefix_cache(self) -> bool:
        return self.block_pool.reset_prefix_cache()
