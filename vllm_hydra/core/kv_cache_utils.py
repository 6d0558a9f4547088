"""KV cache blocks, their free list, and the chained hashes that let full blocks be shared."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NewType

# The sha256 digest of (parent block's hash, token ids of a full block): equal hashes mean an
# equal token prefix, so a block can be reused by any request whose prefix matches.
BlockHash = NewType("BlockHash", bytes)

# The parent of a request's first block. Fixed, so hashes are reproducible across runs.
NONE_HASH = BlockHash(hashlib.sha256(b"vllm_hydra.none_hash").digest())


def hash_block_tokens(
    parent_hash: BlockHash | None,
    block_token_ids: Sequence[int],
    extra_keys: tuple[object, ...] | None = None,
) -> BlockHash:
    """The hash of one full block, chained to the block before it. `extra_keys` (the LoRA
    adapter's name) keep blocks of equal tokens but different KV apart."""
    key = (parent_hash or NONE_HASH, tuple(block_token_ids), extra_keys)
    return BlockHash(hashlib.sha256(pickle.dumps(key, protocol=5)).digest())


def extend_block_hashes(
    block_hashes: list[BlockHash],
    token_ids: Sequence[int],
    block_size: int,
    extra_keys: tuple[object, ...] | None = None,
) -> None:
    """Append the hashes of the full blocks of `token_ids` that `block_hashes` lacks."""
    num_full_blocks = len(token_ids) // block_size
    for i in range(len(block_hashes), num_full_blocks):
        parent = block_hashes[-1] if block_hashes else None
        block = token_ids[i * block_size : (i + 1) * block_size]
        block_hashes.append(hash_block_tokens(parent, block, extra_keys))


@dataclass(eq=False, slots=True)
class KVCacheBlock:
    """One block of the paged KV cache: `block_size` token slots in every layer."""

    block_id: int
    # Requests whose block tables hold this block; 0 means it is in the free queue.
    ref_cnt: int = 0
    # Set once the block is full and cached; cleared when the block is reused (evicted).
    block_hash: BlockHash | None = None
    # Links of the free queue, None while the block is in use.
    prev_free_block: KVCacheBlock | None = None
    next_free_block: KVCacheBlock | None = None
    # Block 0: a placeholder that is never handed out.
    is_null: bool = False

    def __repr__(self) -> str:
        hashed = self.block_hash is not None
        return f"KVCacheBlock(id={self.block_id}, ref_cnt={self.ref_cnt}, hashed={hashed})"


class FreeKVCacheBlockQueue:
    """The free blocks as a doubly linked list, least recently freed first.

    A Python deque cannot remove from the middle in O(1), and a prefix-cache hit must pull a
    free block out of wherever it sits. Fake head and tail nodes keep every edit branch-free.
    """

    def __init__(self, blocks: Iterable[KVCacheBlock]) -> None:
        self.fake_head = KVCacheBlock(block_id=-1)
        self.fake_tail = KVCacheBlock(block_id=-1)
        self.fake_head.next_free_block = self.fake_tail
        self.fake_tail.prev_free_block = self.fake_head
        self.num_free_blocks = 0
        self.append_n(blocks)

    def popleft(self) -> KVCacheBlock:
        """Take the least recently freed block."""
        block = self.fake_head.next_free_block
        if block is None or block is self.fake_tail:
            raise ValueError("No free blocks available")
        self.remove(block)
        return block

    def popleft_n(self, n: int) -> list[KVCacheBlock]:
        if n > self.num_free_blocks:
            raise ValueError(f"Asked for {n} free blocks, only {self.num_free_blocks} are free")
        return [self.popleft() for _ in range(n)]

    def remove(self, block: KVCacheBlock) -> None:
        """Unlink a block from anywhere in the queue in O(1)."""
        prev, nxt = block.prev_free_block, block.next_free_block
        if prev is None or nxt is None:
            raise ValueError(f"{block} is not in the free queue")
        prev.next_free_block = nxt
        nxt.prev_free_block = prev
        block.prev_free_block = block.next_free_block = None
        self.num_free_blocks -= 1

    def append(self, block: KVCacheBlock) -> None:
        """Put a block at the tail: it will be the last to be reused."""
        last = self.fake_tail.prev_free_block
        assert last is not None
        last.next_free_block = block
        block.prev_free_block = last
        block.next_free_block = self.fake_tail
        self.fake_tail.prev_free_block = block
        self.num_free_blocks += 1

    def append_n(self, blocks: Iterable[KVCacheBlock]) -> None:
        for block in blocks:
            self.append(block)

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """The free blocks in eviction order (for tests and debugging)."""
        blocks = []
        block = self.fake_head.next_free_block
        while block is not None and block is not self.fake_tail:
            blocks.append(block)
            block = block.next_free_block
        return blocks
