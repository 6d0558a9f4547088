"""Property test of the persistent input batch (vllm_hydra/worker/input_batch.py, block_table.py,
model_inputs.py): after any sequence of add / step / preempt / finish / resume, the rows the model
runner keeps updated in place equal a from-scratch rebuild of the scheduled requests, and so do
the step's flat inputs and its sampling metadata.

The state machine plays the scheduler: it keeps its own truth about every request (tokens,
blocks, progress) and sends the real `ModelRunner._update_states` only the differences, as the
scheduler does. No model is loaded.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, fields

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from vllm_hydra.config.compose import compose_config
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import (
    CachedRequestData,
    NewRequestData,
    SchedulerOutput,
)
from vllm_hydra.sample.metadata import SamplingMetadata
from vllm_hydra.sampling_params import SamplingParams
from vllm_hydra.worker.input_batch import InputBatch
from vllm_hydra.worker.model_inputs import InputBuffers, ModelInputs, prepare_inputs
from vllm_hydra.worker.model_runner import ModelRunner
from vllm_hydra.worker.request_state import CachedRequestState

BLOCK_SIZE = 4
MAX_MODEL_LEN = 32
MAX_NUM_SEQS = 4
EOS = 2
CPU = torch.device("cpu")


@functools.cache
def _config() -> VllmConfig:
    return compose_config(
        [
            "device=cpu",
            f"model.max_model_len={MAX_MODEL_LEN}",
            f"cache.block_size={BLOCK_SIZE}",
            f"scheduler.max_num_seqs={MAX_NUM_SEQS}",
            f"scheduler.max_num_batched_tokens={MAX_NUM_SEQS * MAX_MODEL_LEN}",
            "cache.num_blocks_override=64",
        ]
    )


def _vocab() -> int:
    return _config().arch.vocab_size


sampling_params = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.8]),
    top_p=st.sampled_from([1.0, 0.9]),
    top_k=st.sampled_from([0, -1, 5]),
    min_p=st.sampled_from([0.0, 0.1]),
    presence_penalty=st.sampled_from([0.0, 0.5]),
    frequency_penalty=st.sampled_from([0.0, -0.3]),
    repetition_penalty=st.sampled_from([1.0, 1.2]),
    seed=st.one_of(st.none(), st.integers(0, 2**31)),
    min_tokens=st.sampled_from([0, 3]),
    logprobs=st.sampled_from([None, 2]),
    logit_bias=st.sampled_from([None, {5: 1.5}]),
)


@dataclass
class Req:
    """The test's truth about one request, as the scheduler knows it."""

    req_id: str
    prompt: list[int]
    params: SamplingParams
    outputs: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    num_computed: int = 0
    # Whether the runner holds its state: set once it is sent as a new request.
    sent: bool = False
    preempted: bool = False

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.outputs

    def state(self) -> CachedRequestState:
        """A CachedRequestState built from nothing but the truth."""
        new = NewRequestData(
            self.req_id, self.prompt, self.params, self.blocks, self.num_computed, self.outputs, EOS
        )
        return CachedRequestState.from_new_request(new, CPU)


class InputBatchMachine(RuleBasedStateMachine):
    reqs = Bundle("reqs")

    def __init__(self) -> None:
        super().__init__()
        self.runner = ModelRunner(_config(), CPU)
        self.requests: dict[str, Req] = {}
        self.ids = itertools.count()
        self.block_ids = itertools.count(1)  # block 0 is the null block
        # The next SchedulerOutput's differences.
        self.finished: set[str] = set()
        self.preempted: set[str] = set()

    @initialize()
    def check_empty(self) -> None:
        assert self.runner.input_batch.num_reqs == 0

    # ---- the scheduler's events ----

    def _active(self) -> list[Req]:
        return [r for r in self.requests.values() if not r.preempted]

    @precondition(lambda self: len(self._active()) < MAX_NUM_SEQS)
    @rule(
        target=reqs,
        prompt=st.lists(st.integers(3, 4000), min_size=1, max_size=20),
        params=sampling_params,
        cached_blocks=st.integers(0, 4),
    )
    def add(self, prompt: list[int], params: SamplingParams, cached_blocks: int) -> str:
        req = Req(f"r{next(self.ids)}", prompt, params)
        self._set_prefix_hit(req, cached_blocks)
        self.requests[req.req_id] = req
        return req.req_id

    def _set_prefix_hit(self, req: Req, cached_blocks: int) -> None:
        """Start from a prefix-cache hit of whole blocks that leaves a token to compute."""
        cached_blocks = min(cached_blocks, (len(req.tokens) - 1) // BLOCK_SIZE)
        req.num_computed = cached_blocks * BLOCK_SIZE
        req.blocks = [next(self.block_ids) for _ in range(cached_blocks)]

    @rule(req_id=reqs)
    def preempt(self, req_id: str) -> None:
        req = self.requests.get(req_id)
        if req is None or not req.sent or req.preempted:
            return
        req.preempted, req.sent = True, False
        req.blocks, req.num_computed = [], 0
        self.preempted.add(req_id)

    @rule(req_id=reqs, cached_blocks=st.integers(0, 4))
    def resume(self, req_id: str, cached_blocks: int) -> None:
        req = self.requests.get(req_id)
        if req is None or not req.preempted or len(self._active()) >= MAX_NUM_SEQS:
            return
        req.preempted = False
        self._set_prefix_hit(req, cached_blocks)

    @rule(req_id=consumes(reqs))
    def finish(self, req_id: str) -> None:
        req = self.requests.pop(req_id, None)
        if req is not None and (req.sent or req.preempted):
            self.finished.add(req_id)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        output = self._schedule(data)
        self.runner._update_states(output)
        batch = self.runner.input_batch
        assert set(batch.req_ids) == set(output.num_scheduled_tokens)
        if not batch.num_reqs:
            return
        req_ids: list[str] = list(batch.req_ids)  # type: ignore[arg-type]
        num_scheduled = np.array([output.num_scheduled_tokens[r] for r in req_ids], np.int32)
        inputs = prepare_inputs(batch, num_scheduled, self.runner.input_buffers)
        self._check_inputs(inputs, req_ids)
        rebuilt = self._rebuild(req_ids)
        rebuilt_inputs = prepare_inputs(
            rebuilt, num_scheduled, InputBuffers(MAX_NUM_SEQS * MAX_MODEL_LEN, MAX_NUM_SEQS, CPU)
        )
        _assert_same_inputs(inputs, rebuilt_inputs)
        self._check_sampling_metadata(batch.sampling_metadata(), rebuilt, req_ids)
        self._sample(data, inputs, req_ids)

    def _schedule(self, data: st.DataObject) -> SchedulerOutput:
        """This step: each active request computes some of its known, uncomputed tokens (a
        continuing one may also sit the step out); blocks are allocated to cover them."""
        new_reqs, cached, scheduled = [], CachedRequestData(), {}
        for req in self._active():
            if req.sent and data.draw(st.booleans(), label=f"{req.req_id} sits out"):
                continue
            left = len(req.tokens) - req.num_computed
            n = data.draw(st.integers(1, left), label=f"{req.req_id} tokens")
            needed = -(-(req.num_computed + n) // BLOCK_SIZE) - len(req.blocks)
            new_blocks = [next(self.block_ids) for _ in range(max(needed, 0))]
            req.blocks.extend(new_blocks)
            scheduled[req.req_id] = n
            if req.sent:
                cached.req_ids.append(req.req_id)
                cached.resumed_from_preemption.append(False)
                cached.new_block_ids.append(new_blocks or None)
                cached.num_computed_tokens.append(req.num_computed)
            else:
                new_reqs.append(
                    NewRequestData(
                        req.req_id,
                        list(req.prompt),
                        req.params,
                        list(req.blocks),
                        req.num_computed,
                        list(req.outputs),
                        EOS,
                    )
                )
                req.sent = True
        output = SchedulerOutput(
            new_reqs,
            cached,
            scheduled,
            sum(scheduled.values()),
            self.finished,
            self.preempted,
        )
        self.finished, self.preempted = set(), set()
        return output

    def _sample(self, data: st.DataObject, inputs: ModelInputs, req_ids: list[str]) -> None:
        """Advance the truth; rows that reach their last token sample one, which the runner
        records as it records the sampler's. A request at max_model_len finishes."""
        rows = np.flatnonzero(inputs.sample_mask)
        tokens = np.array([data.draw(st.integers(0, _vocab() - 1)) for _ in rows], dtype=np.int64)
        self.runner._record_sampled(rows, tokens)
        for row, req_id in enumerate(req_ids):
            req = self.requests[req_id]
            req.num_computed += int(inputs.query_lens[row])
        for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
            req = self.requests[req_ids[row]]
            req.outputs.append(token)
            if len(req.tokens) >= MAX_MODEL_LEN:
                self.finish(req.req_id)

    # ---- checks ----

    def _rebuild(self, req_ids: list[str]) -> InputBatch:
        """A fresh batch with the scheduled requests, in the live batch's row order."""
        rebuilt = InputBatch(MAX_NUM_SEQS, MAX_MODEL_LEN, BLOCK_SIZE, _vocab(), CPU)
        for req_id in req_ids:
            rebuilt.add_request(self.requests[req_id].state())
        live = self.runner.input_batch
        n = len(req_ids)
        assert live.num_reqs == rebuilt.num_reqs == n and live.req_ids == rebuilt.req_ids
        assert live.req_id_to_index == rebuilt.req_id_to_index
        for name in ("num_tokens", "num_prompt_tokens", "num_computed_tokens_cpu"):
            np.testing.assert_array_equal(getattr(live, name)[:n], getattr(rebuilt, name)[:n])
        for row in range(n):
            width = live.num_tokens[row]
            np.testing.assert_array_equal(
                live.token_ids_cpu[row, :width], rebuilt.token_ids_cpu[row, :width]
            )
            np.testing.assert_array_equal(live.block_table.row(row), rebuilt.block_table.row(row))
            assert live.requests[row].req_id == req_ids[row]  # type: ignore[union-attr]
            assert live.spec_token_ids[row] == rebuilt.spec_token_ids[row] == []
        for name, buffer in live.sampling.items():
            np.testing.assert_array_equal(buffer.np[:n], rebuilt.sampling[name].np[:n])
        np.testing.assert_array_equal(
            live.request_lora_mapping[:n], rebuilt.request_lora_mapping[:n]
        )
        # Each seeded row keeps its own request's generator, wherever the row moved.
        assert live.generators.keys() == rebuilt.generators.keys()
        for row, generator in live.generators.items():
            assert generator is self.runner.requests[req_ids[row]].generator
        return rebuilt

    def _check_inputs(self, inputs: ModelInputs, req_ids: list[str]) -> None:
        """The flat inputs against the truth, token by token."""
        ids, positions, slots = [], [], []
        for row, req_id in enumerate(req_ids):
            req = self.requests[req_id]
            for pos in range(req.num_computed, req.num_computed + int(inputs.query_lens[row])):
                ids.append(req.tokens[pos])
                positions.append(pos)
                slots.append(req.blocks[pos // BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE)
        assert inputs.input_ids.tolist() == ids
        assert inputs.positions.tolist() == positions
        meta = inputs.attn_metadata
        assert meta.slot_mapping.tolist() == slots
        seq_lens = [
            self.requests[r].num_computed + int(q)
            for r, q in zip(req_ids, inputs.query_lens, strict=True)
        ]
        assert meta.seq_lens.tolist() == seq_lens
        for row, req_id in enumerate(req_ids):
            blocks = self.requests[req_id].blocks
            assert meta.block_table[row, : len(blocks)].tolist() == blocks
        expected_mask = [
            s == len(self.requests[r].tokens) for r, s in zip(req_ids, seq_lens, strict=True)
        ]
        assert inputs.sample_mask.tolist() == expected_mask

    def _check_sampling_metadata(
        self, metadata: SamplingMetadata, rebuilt: InputBatch, req_ids: list[str]
    ) -> None:
        reqs = [self.requests[r] for r in req_ids]
        from_lists = SamplingMetadata.build(
            [r.params for r in reqs],
            [r.prompt for r in reqs],
            [r.outputs for r in reqs],
            {},
            _vocab(),
            CPU,
            [EOS] * len(reqs),
        )
        for other in (rebuilt.sampling_metadata(), from_lists):
            _assert_same_metadata(metadata, other)

    @invariant()
    def rows_are_condensed(self) -> None:
        batch = self.runner.input_batch
        assert None not in batch.req_ids and len(batch.req_ids) == batch.num_reqs


def _assert_same_inputs(a: ModelInputs, b: ModelInputs) -> None:
    for name in ("input_ids", "positions", "logits_indices"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("query_lens", "sample_mask", "starts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    ma, mb = a.attn_metadata, b.attn_metadata
    # The block table's rows are compared up to their filled length (in `_check_inputs`): past
    # it a row keeps stale ids of the row that was moved away, as vLLM's does; nothing reads them.
    for name in ("query_start_loc", "seq_lens", "slot_mapping"):
        assert torch.equal(getattr(ma, name), getattr(mb, name)), name
    assert (ma.max_query_len, ma.max_seq_len) == (mb.max_query_len, mb.max_seq_len)


def _assert_same_metadata(a: SamplingMetadata, b: SamplingMetadata) -> None:
    for f in fields(SamplingMetadata):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name == "generators":
            assert va.keys() >= vb.keys(), f.name
        elif isinstance(va, torch.Tensor) or isinstance(vb, torch.Tensor):
            assert va is not None and vb is not None, f.name
            assert torch.equal(va, vb), f.name
        elif isinstance(va, tuple) and va and isinstance(va[0], torch.Tensor):  # SparseLogits
            _assert_same_sparse(va, vb, f.name)
        else:
            assert va == vb, f.name


def _assert_same_sparse(a: tuple, b: tuple, name: str) -> None:
    assert b is not None, name
    order_a = np.lexsort((a[1].numpy(), a[0].numpy()))
    order_b = np.lexsort((b[1].numpy(), b[0].numpy()))
    for ta, tb in zip(a, b, strict=True):
        assert torch.equal(ta[order_a], tb[order_b]), name


InputBatchMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_input_batch_equals_a_rebuild = InputBatchMachine.TestCase


@pytest.fixture(autouse=True, scope="module")
def _composed_once() -> None:
    _config()


def test_a_moved_row_keeps_its_requests_generator() -> None:
    """The case the machine reaches only by chance: a seeded request's row moves into a hole."""
    batch = InputBatch(MAX_NUM_SEQS, MAX_MODEL_LEN, BLOCK_SIZE, _vocab(), CPU)
    first = Req("a", [3, 4, 5], SamplingParams(), blocks=[1])
    seeded = Req("b", [6, 7], SamplingParams(temperature=0.8, seed=7), blocks=[2])
    state = seeded.state()
    batch.add_request(first.state())
    batch.add_request(state)
    batch.remove_request("a")
    batch.condense()
    assert batch.req_ids == ["b"] and batch.generators == {0: state.generator}
    assert batch.sampling["temperature"].np[0] == pytest.approx(0.8)
    np.testing.assert_array_equal(batch.block_table.row(0), [2])
    np.testing.assert_array_equal(batch.token_ids_cpu[0, :2], [6, 7])
