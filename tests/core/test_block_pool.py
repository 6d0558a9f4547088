"""BlockPool: the null block, ref counts, LRU reuse and lazy eviction of cached hashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sched_harness import check_block_pool

from vllm_hydra.core.block_pool import BlockPool
from vllm_hydra.core.kv_cache_utils import hash_block_tokens


def _ids(blocks) -> list[int]:
    return [b.block_id for b in blocks]


def test_null_block_is_never_handed_out() -> None:
    pool = BlockPool(num_blocks=5, enable_caching=True)
    assert pool.null_block.block_id == 0 and pool.null_block.is_null
    assert pool.get_num_free_blocks() == 4
    blocks = pool.get_new_blocks(4)
    assert _ids(blocks) == [1, 2, 3, 4]
    assert all(b.ref_cnt == 1 for b in blocks)
    assert pool.get_usage() == 1.0
    with pytest.raises(ValueError):
        pool.get_new_blocks(1)


def test_too_few_blocks_is_an_error() -> None:
    with pytest.raises(ValueError):
        BlockPool(num_blocks=1, enable_caching=True)


def test_free_blocks_in_given_order_makes_tail_blocks_evicted_first() -> None:
    pool = BlockPool(num_blocks=6, enable_caching=True)
    request_blocks = pool.get_new_blocks(3)  # ids 1, 2, 3
    pool.free_blocks(reversed(request_blocks))
    # Never-used blocks 4, 5 go first; then the request's tail block, and its head last.
    assert _ids(pool.get_new_blocks(5)) == [4, 5, 3, 2, 1]


def test_usage_counts_blocks_in_use() -> None:
    pool = BlockPool(num_blocks=5, enable_caching=False)
    blocks = pool.get_new_blocks(1)
    assert pool.get_usage() == pytest.approx(0.25)
    pool.free_blocks(blocks)
    assert pool.get_usage() == 0.0


def test_cached_block_stays_matchable_after_free_until_reused() -> None:
    pool = BlockPool(num_blocks=3, enable_caching=True)
    block_hash = hash_block_tokens(None, [1, 2])
    (block,) = pool.get_new_blocks(1)
    pool.cache_full_blocks([block], [block_hash], num_cached_blocks=0, num_full_blocks=1)
    assert pool.get_cached_block(block_hash) is block
    pool.free_blocks([block])
    assert block.ref_cnt == 0
    assert pool.get_cached_block(block_hash) is block  # LRU: still there
    # Block 2 was never used, so it goes first; the cached block survives one more allocation.
    pool.get_new_blocks(1)
    assert pool.get_cached_block(block_hash) is block
    (reused,) = pool.get_new_blocks(1)
    assert reused is block and block.block_hash is None
    assert pool.get_cached_block(block_hash) is None
    assert not pool.cached_block_hash_to_block


def test_touch_takes_a_free_cached_block_out_of_the_middle_of_the_queue() -> None:
    pool = BlockPool(num_blocks=5, enable_caching=True)
    blocks = pool.get_new_blocks(4)
    pool.free_blocks(blocks)
    pool.touch([blocks[1]])
    assert blocks[1].ref_cnt == 1
    assert pool.get_num_free_blocks() == 3
    assert _ids(pool.get_new_blocks(3)) == [1, 3, 4]
    pool.touch([blocks[1]])  # a second holder
    assert blocks[1].ref_cnt == 2
    pool.free_blocks([blocks[1]])
    assert blocks[1].ref_cnt == 1 and pool.get_num_free_blocks() == 0


def test_freeing_a_free_block_is_an_error() -> None:
    pool = BlockPool(num_blocks=3, enable_caching=True)
    blocks = pool.get_new_blocks(1)
    pool.free_blocks(blocks)
    with pytest.raises(ValueError):
        pool.free_blocks(blocks)


def test_identical_blocks_share_a_hash_without_merging() -> None:
    pool = BlockPool(num_blocks=4, enable_caching=True)
    block_hash = hash_block_tokens(None, [7, 7])
    a, b = pool.get_new_blocks(2)
    pool.cache_full_blocks([a], [block_hash], 0, 1)
    pool.cache_full_blocks([b], [block_hash], 0, 1)
    assert len(pool.cached_block_hash_to_block[block_hash]) == 2
    pool.free_blocks([a, b])
    pool.get_new_blocks(2)  # block 3, then a: a's hash entry goes, b's stays
    assert pool.get_cached_block(block_hash) is b


def test_caching_disabled_registers_nothing() -> None:
    pool = BlockPool(num_blocks=3, enable_caching=False)
    blocks = pool.get_new_blocks(1)
    pool.cache_full_blocks(blocks, [hash_block_tokens(None, [1])], 0, 1)
    assert blocks[0].block_hash is None and not pool.cached_block_hash_to_block


def test_reset_prefix_cache_only_when_every_block_is_free() -> None:
    pool = BlockPool(num_blocks=3, enable_caching=True)
    block_hash = hash_block_tokens(None, [1, 2])
    blocks = pool.get_new_blocks(1)
    pool.cache_full_blocks(blocks, [block_hash], 0, 1)
    assert not pool.reset_prefix_cache()
    assert pool.get_cached_block(block_hash) is blocks[0]
    pool.free_blocks(blocks)
    assert pool.reset_prefix_cache()
    assert pool.get_cached_block(block_hash) is None
    assert blocks[0].block_hash is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alloc", "free", "touch"]), st.integers(0, 9))))
def test_ref_counts_track_holders(ops: list[tuple[str, int]]) -> None:
    """Random alloc/free/touch by 3 holders: ref_cnt == number of holders, free iff 0."""
    pool = BlockPool(num_blocks=8, enable_caching=True)
    holders: list[list] = [[], [], []]
    for op, arg in ops:
        table = holders[arg % 3]
        if op == "alloc" and pool.get_num_free_blocks() > 0:
            table.extend(pool.get_new_blocks(1))
            block_hash = hash_block_tokens(None, [arg])
            pool.cache_full_blocks(table[-1:], [block_hash], 0, 1)
        elif op == "free" and table:
            pool.free_blocks(reversed(table))
            table.clear()
        elif op == "touch":
            cached = pool.get_cached_block(hash_block_tokens(None, [arg]))
            if cached is not None and cached not in table:
                pool.touch([cached])
                table.append(cached)
        check_block_pool(pool, [_ids(t) for t in holders])
    for table in holders:
        pool.free_blocks(reversed(table))
    assert pool.get_num_free_blocks() == 7
    assert all(b.ref_cnt == 0 for b in pool.blocks)
