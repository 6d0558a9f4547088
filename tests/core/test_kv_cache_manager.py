"""KVCacheManager: block tables, prefix-cache hits (capped one token short) and their stats."""

from __future__ import annotations

from sched_harness import check_block_pool, make_request

from vllm_hydra.core.kv_cache_manager import KVCacheManager
from vllm_hydra.core.request import Request

BLOCK = 4


def _manager(num_blocks: int = 11, enable_caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks, BLOCK, enable_caching, max_model_len=64)


def _admit(manager: KVCacheManager, request: Request) -> list[int] | None:
    """What the scheduler does for a waiting request scheduled whole."""
    blocks, num_hit = manager.get_computed_blocks(request)
    new_ids = manager.allocate_slots(request, request.num_tokens - num_hit, blocks, num_hit)
    if new_ids is not None:
        request.num_computed_tokens = request.num_tokens
    return new_ids


def _check(manager: KVCacheManager) -> None:
    check_block_pool(manager.block_pool, [manager.get_block_ids(r) for r in manager.req_to_blocks])


def test_allocate_grows_the_table_only_at_block_boundaries() -> None:
    manager = _manager()
    request = make_request("a", list(range(10, 16)))  # 6 tokens: 2 blocks
    assert manager.allocate_slots(request, 6) == [1, 2]
    request.num_computed_tokens = 6
    request.append_output_token_ids([20, 21])  # 8 tokens: still 2 blocks
    assert manager.allocate_slots(request, 2) == []
    request.num_computed_tokens = 8
    request.append_output_token_ids(22)
    assert manager.allocate_slots(request, 1) == [3]
    assert manager.get_block_ids("a") == [1, 2, 3]
    _check(manager)


def test_allocate_returns_none_and_changes_nothing_when_blocks_run_out() -> None:
    manager = _manager(num_blocks=3)  # 2 usable blocks
    a = make_request("a", list(range(10, 15)))  # 5 tokens: 2 blocks
    assert manager.allocate_slots(a, 5) is not None
    b = make_request("b", [1])
    assert manager.allocate_slots(b, 1) is None
    assert manager.get_block_ids("b") == [] and "b" not in manager.req_to_blocks
    assert manager.block_pool.get_num_free_blocks() == 0
    _check(manager)


def test_prefix_hit_shares_blocks_and_counts_tokens() -> None:
    manager = _manager()
    prompt = list(range(10, 20))  # 10 tokens: 2 full blocks + 2
    a = make_request("a", prompt)
    assert _admit(manager, a) == [1, 2, 3]
    b = make_request("b", [*prompt[:9], 99, 98])  # shares the first 2 blocks only
    blocks, num_hit = manager.get_computed_blocks(b)
    assert [x.block_id for x in blocks] == [1, 2] and num_hit == 8
    assert manager.allocate_slots(b, 3, blocks, num_hit) == [1, 2, 4]
    assert [manager.block_pool.blocks[i].ref_cnt for i in (1, 2, 3, 4)] == [2, 2, 1, 1]
    stats = manager.prefix_cache_stats
    assert (stats.requests, stats.queries, stats.hits) == (2, 10 + 11, 8)
    _check(manager)
    manager.free(a)
    manager.free(b)
    assert all(x.ref_cnt == 0 for x in manager.block_pool.blocks)


def test_hit_is_capped_one_token_short_of_the_prompt() -> None:
    manager = _manager()
    prompt = list(range(10, 22))  # 12 tokens: exactly 3 full blocks
    _admit(manager, make_request("a", prompt))
    blocks, num_hit = manager.get_computed_blocks(make_request("b", prompt))
    # The last token must be recomputed, which costs its whole block.
    assert num_hit == 8 and len(blocks) == 2
    blocks, num_hit = manager.get_computed_blocks(make_request("c", [*prompt, 5]))
    assert num_hit == 12  # one more token: all 3 blocks hit


def test_one_block_prompt_never_hits() -> None:
    manager = _manager()
    _admit(manager, make_request("a", [1, 2, 3, 4]))
    assert manager.get_computed_blocks(make_request("b", [1, 2, 3, 4])) == ([], 0)


def test_failed_admission_is_not_counted_as_a_lookup() -> None:
    manager = _manager(num_blocks=4)  # 3 usable blocks
    a = make_request("a", [1, 2, 3, 4, 5])  # 2 blocks
    _admit(manager, a)
    b = make_request("b", list(range(30, 39)))  # 3 blocks
    assert _admit(manager, b) is None
    assert manager.prefix_cache_stats.requests == 1
    manager.free(a)
    assert _admit(manager, b) is not None
    stats = manager.prefix_cache_stats
    assert (stats.requests, stats.queries, stats.hits) == (2, 5 + 9, 0)


def test_freed_prefix_stays_cached_and_tail_blocks_are_evicted_first() -> None:
    manager = _manager(num_blocks=6)  # 5 usable blocks
    prompt = list(range(10, 27))  # 17 tokens: 4 full blocks + 1
    a = make_request("a", prompt)
    _admit(manager, a)  # blocks 1..5
    manager.free(a)
    # Freed tail first: the free queue is 5, 4, 3, 2, 1. Taking one block evicts the tail.
    other = make_request("x", [60, 61])
    assert _admit(manager, other) == [5]
    blocks, num_hit = manager.get_computed_blocks(make_request("b", prompt))
    assert [x.block_id for x in blocks] == [1, 2, 3, 4] and num_hit == 16
    manager.free(other)
    # The queue is now 4, 3, 2, 1, 5: two more blocks evict a's 4th and 3rd blocks.
    _admit(manager, make_request("y", list(range(40, 45))))
    blocks, num_hit = manager.get_computed_blocks(make_request("c", prompt))
    assert [x.block_id for x in blocks] == [1, 2] and num_hit == 8


def test_hits_on_free_blocks_do_not_count_as_free_space() -> None:
    manager = _manager(num_blocks=4)  # 3 usable blocks
    prompt = list(range(10, 19))  # 9 tokens: 3 blocks
    a = make_request("a", prompt)
    _admit(manager, a)
    manager.free(a)
    # b hits 2 free blocks and needs 1 more: 3 free blocks suffice exactly.
    b = make_request("b", prompt)
    assert _admit(manager, b) == [1, 2, 3]
    assert manager.block_pool.get_num_free_blocks() == 0
    _check(manager)
    # c hits b's 2 blocks (in use) and needs 1 more: none is left.
    c = make_request("c", prompt)
    assert _admit(manager, c) is None
    _check(manager)


def test_prompt_logprobs_skip_the_prefix_cache() -> None:
    manager = _manager()
    prompt = list(range(10, 20))
    _admit(manager, make_request("a", prompt))
    request = make_request("b", prompt, prompt_logprobs=1)
    assert manager.get_computed_blocks(request) == ([], 0)


def test_caching_disabled_never_hits() -> None:
    manager = _manager(enable_caching=False)
    prompt = list(range(10, 20))
    _admit(manager, make_request("a", prompt))
    assert manager.get_computed_blocks(make_request("b", prompt)) == ([], 0)
    assert manager.prefix_cache_stats.queries == 0
    assert not manager.block_pool.cached_block_hash_to_block


def test_generated_tokens_are_cached_too() -> None:
    manager = _manager()
    a = make_request("a", [1, 2, 3])
    _admit(manager, a)
    assert not manager.block_pool.cached_block_hash_to_block  # no full block yet
    a.append_output_token_ids([4, 5])
    # Computing token 4 fills the first block, which is cached at once.
    assert manager.allocate_slots(a, 1) == []
    a.num_computed_tokens = 4
    assert len(manager.block_pool.cached_block_hash_to_block) == 1
    assert manager.allocate_slots(a, 1) == [2]
    _, num_hit = manager.get_computed_blocks(make_request("b", [1, 2, 3, 4, 5, 6]))
    assert num_hit == 4


def test_usage_and_reset_prefix_cache() -> None:
    manager = _manager(num_blocks=5)
    a = make_request("a", list(range(10, 19)))
    _admit(manager, a)
    assert manager.usage == 0.75
    assert not manager.reset_prefix_cache()
    manager.free(a)
    assert manager.usage == 0.0
    assert manager.reset_prefix_cache()
    assert manager.get_computed_blocks(make_request("b", list(range(10, 19)))) == ([], 0)
