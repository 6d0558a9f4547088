"""Block hashing and the O(1) free-block queue."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_hydra.core.kv_cache_utils import (
    FreeKVCacheBlockQueue,
    KVCacheBlock,
    extend_block_hashes,
    hash_block_tokens,
)


def test_hash_is_chained_on_the_parent() -> None:
    first = hash_block_tokens(None, [1, 2, 3, 4])
    assert first == hash_block_tokens(None, [1, 2, 3, 4])
    assert first != hash_block_tokens(None, [1, 2, 3, 5])
    # Same tokens after a different prefix: a different block.
    other_parent = hash_block_tokens(None, [9, 9, 9, 9])
    assert hash_block_tokens(first, [5, 6, 7, 8]) != hash_block_tokens(other_parent, [5, 6, 7, 8])


def test_extend_block_hashes_hashes_only_full_blocks_and_is_incremental() -> None:
    hashes: list = []
    extend_block_hashes(hashes, [1, 2, 3, 4, 5, 6], block_size=4)
    assert len(hashes) == 1
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    extend_block_hashes(hashes, tokens, block_size=4)
    assert len(hashes) == 2
    assert hashes[1] == hash_block_tokens(hash_block_tokens(None, [1, 2, 3, 4]), [5, 6, 7, 8])


def _queue(n: int) -> tuple[list[KVCacheBlock], FreeKVCacheBlockQueue]:
    blocks = [KVCacheBlock(i) for i in range(n)]
    return blocks, FreeKVCacheBlockQueue(blocks)


def test_free_queue_remove_from_middle_and_append() -> None:
    blocks, queue = _queue(5)
    queue.remove(blocks[2])
    assert [b.block_id for b in queue.get_all_free_blocks()] == [0, 1, 3, 4]
    assert queue.num_free_blocks == 4
    queue.append(blocks[2])
    assert queue.popleft() is blocks[0]
    assert [b.block_id for b in queue.popleft_n(4)] == [1, 3, 4, 2]
    with pytest.raises(ValueError):
        queue.popleft()
    with pytest.raises(ValueError):
        queue.remove(blocks[0])  # not in the queue


def test_popleft_n_refuses_more_than_free() -> None:
    _, queue = _queue(3)
    with pytest.raises(ValueError):
        queue.popleft_n(4)
    assert queue.num_free_blocks == 3


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pop", "remove", "append"]), st.integers(0, 7))))
def test_free_queue_matches_a_list(ops: list[tuple[str, int]]) -> None:
    blocks, queue = _queue(8)
    model = list(blocks)
    for op, i in ops:
        block = blocks[i]
        if op == "pop" and model:
            assert queue.popleft() is model.pop(0)
        elif op == "remove" and block in model:
            queue.remove(block)
            model.remove(block)
        elif op == "append" and block not in model:
            queue.append(block)
            model.append(block)
        assert queue.get_all_free_blocks() == model
        assert queue.num_free_blocks == len(model)


def test_extra_keys_keep_equal_tokens_of_two_adapters_apart() -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7, 8]
    base, sql, sql_again = [], [], []
    extend_block_hashes(base, tokens, block_size=4)
    extend_block_hashes(sql, tokens, block_size=4, extra_keys=("sql",))
    extend_block_hashes(sql_again, tokens, block_size=4, extra_keys=("sql",))
    assert sql == sql_again
    assert not set(base) & set(sql)
