"""`ModelRunner`: runs one scheduled step on a device (the seed's GPUModelRunner, device-agnostic).

It keeps each request's state between steps (`CachedRequestState`) and the scheduled ones as
rows of the persistent `InputBatch`, updated in place from what the scheduler says changed;
flattens the step into one batch of prefills and decodes (vectorised, into persistent buffers),
has the backend's `AttentionMetadataBuilder` plan the step's attention once, runs the model over
the paged KV cache, samples, and computes logprobs.

Under pipeline parallelism a stage runs only its layers: it receives the residual stream from
the previous stage, sends its own to the next, and only the last stage computes logits and
samples. Stages before the last learn each request's sampled tokens from the scheduler
(`CachedRequestData.new_token_ids`).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from vllm_hydra.attention.backends.abstract import AttentionMetadata
from vllm_hydra.attention.kv_cache_quant import kv_cache_torch_dtype
from vllm_hydra.attention.layer import Attention, register_attention_layers
from vllm_hydra.attention.selector import get_attn_backend, get_attn_metadata_builder
from vllm_hydra.compilation.cuda_graph import CUDAGraphRunner
from vllm_hydra.compilation.torch_compile import ModelForward, compile_model
from vllm_hydra.config.compilation import CompilationMode
from vllm_hydra.config.memory_plan import kv_heads_per_rank
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import CachedRequestData, SchedulerOutput
from vllm_hydra.distributed.parallel_state import get_pp_group
from vllm_hydra.distributed.utils import get_pp_indices
from vllm_hydra.forward_context import set_forward_context
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.lora.worker_manager import WorkerLoRAManager
from vllm_hydra.model_executor.model_loader import get_model
from vllm_hydra.outputs import LogprobsTensors, ModelRunnerOutput
from vllm_hydra.sample.logprobs import compute_logprobs, gather_logprobs
from vllm_hydra.sample.metadata import SamplingMetadata
from vllm_hydra.sample.rejection_sampler import RejectionSampler
from vllm_hydra.sample.sampler import Sampler
from vllm_hydra.sequence import IntermediateTensors
from vllm_hydra.spec_decode.runner import SpecDecodeRunner
from vllm_hydra.structured_output.bitmask import apply_grammar_bitmask
from vllm_hydra.worker.input_batch import InputBatch
from vllm_hydra.worker.kv_cache_alloc import allocate_kv_cache
from vllm_hydra.worker.model_inputs import InputBuffers, ModelInputs, prepare_inputs
from vllm_hydra.worker.request_state import CachedRequestState

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelRunner:
    def __init__(self, vllm_config: VllmConfig, device: torch.device) -> None:
        self.config = vllm_config
        self.device = device
        self.block_size = vllm_config.cache.block_size
        self.vocab_size = vllm_config.arch.vocab_size
        self.kv_cache_dtype = kv_cache_torch_dtype(vllm_config.cache.cache_dtype.value)
        self.attn_backend = get_attn_backend(vllm_config.attention.backend.value)
        self.attn_metadata_builder = get_attn_metadata_builder(vllm_config, device)
        self.model: nn.Module | None = None
        # The model forward as compilation.mode runs it (eager or under torch.compile).
        self.model_forward: ModelForward | None = None
        self.cudagraph_runner: CUDAGraphRunner | None = None
        # lora=enabled: the adapters (host cache, device slots) and the LoRA layers' mapping.
        self.lora_manager: WorkerLoRAManager | None = None
        self.kv_caches: list[torch.Tensor] = []
        self.requests: dict[str, CachedRequestState] = {}
        scheduler, compilation = vllm_config.scheduler, vllm_config.compilation
        # Room for the largest captured decode batch too: the graphs read these buffers.
        largest_graph = max(compilation.cudagraph_capture_sizes or [0])
        max_num_reqs = max(scheduler.max_num_seqs, largest_graph)
        max_num_tokens = max(scheduler.max_num_batched_tokens or 1, largest_graph)
        self.input_batch = InputBatch(
            max_num_reqs, self._max_model_len(), self.block_size, self.vocab_size, device
        )
        self.input_buffers = InputBuffers(max_num_tokens, max_num_reqs, device)
        self.sampler = Sampler()
        # Speculative decoding: proposes drafts after each step and verifies them in the next.
        self.spec_decode = (
            SpecDecodeRunner(vllm_config, self.input_batch, RejectionSampler(), device)
            if vllm_config.speculative.enabled
            else None
        )

    def _max_model_len(self) -> int:
        max_model_len = self.config.model.max_model_len
        assert max_model_len is not None, "create_vllm_config resolves model.max_model_len"
        return max_model_len

    # ---- set-up ----

    def load_model(self) -> None:
        self.model = get_model(self.config)
        if self.config.lora.enabled:  # wraps the linears before anything compiles them
            self.lora_manager = WorkerLoRAManager(self.model, self.config, self.device)
        if self.spec_decode is not None:
            self.spec_decode.load_model()  # a draft model's weights
        self.model_forward = self.model
        if self.config.compilation.mode is CompilationMode.torch_compile:
            register_attention_layers(self.model, self.num_layers())
            self.model_forward = compile_model(self.model, self.config.compilation.cache_dir)

    @torch.inference_mode()
    def compile_or_warm_up_model(self) -> None:
        """Once the KV cache exists: compile (torch_compile) or capture the decode graphs
        (cudagraph) now, so that no request waits for it."""
        mode = self.config.compilation.mode
        if mode is CompilationMode.torch_compile:
            self._warm_up_compiled_model()
        elif mode is CompilationMode.cudagraph:
            self._capture_cudagraphs()
        if self.config.cache.calculate_kv_scales:
            self._calculate_kv_scales_on_next_batch()

    def _calculate_kv_scales_on_next_batch(self) -> None:
        """The first real batch after warm-up sets each layer's fp8 k_scale / v_scale (the
        dummy batches of profiling and warm-up must not)."""
        for module in self._model().modules():
            if isinstance(module, Attention):
                module.calculate_kv_scales = True

    def _warm_up_compiled_model(self) -> None:
        """A 2-token batch (the graphs dynamic in tokens) and a 1-token one (Dynamo
        specialises size 1). Their dummy K/V go to the null block 0, which nothing reads."""
        assert self.model_forward is not None
        for kv_cache in self.kv_caches:
            # Fixed shapes: else Dynamo's duck sizing ties a cache dim to an equal token count.
            torch._dynamo.mark_static(kv_cache)
        for n in (2, 1):
            self._dummy_forward(n, [0] * n)
            self._dummy_decode(n)

    def _capture_cudagraphs(self) -> None:
        compilation = self.config.compilation
        self.cudagraph_runner = CUDAGraphRunner(
            self._model(),
            self.kv_caches,
            compilation.cudagraph_capture_sizes or [1],
            self._max_model_len(),
            self.input_buffers,
            self.input_batch.block_table,
        )
        self.cudagraph_runner.capture()

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        arch = self.config.arch
        heads = kv_heads_per_rank(self.config)
        return self.attn_backend.get_kv_cache_shape(
            num_blocks, self.block_size, heads, arch.head_dim
        )

    def num_layers(self) -> int:
        """Layers on this pipeline stage (all of them without pipeline parallelism)."""
        pp = get_pp_group()
        start, end = get_pp_indices(self.config.arch.num_hidden_layers, pp.rank, pp.world_size)
        return end - start

    def kv_cache_bytes_per_block(self) -> int:
        """Bytes one block takes over all layers of this rank."""
        numel = 1
        for dim in self.kv_cache_shape(1):
            numel *= dim
        draft = self.spec_decode.kv_cache_bytes_per_block() if self.spec_decode else 0
        return numel * self.kv_cache_dtype.itemsize * self.num_layers() + draft

    def initialize_kv_cache(self, num_blocks: int) -> None:
        shape = self.kv_cache_shape(num_blocks)
        self.kv_caches = [
            allocate_kv_cache(shape, self.kv_cache_dtype, self.device)
            for _ in range(self.num_layers())
        ]
        if self.spec_decode is not None:
            self.spec_decode.initialize_kv_cache(num_blocks)  # the draft's layers, same blocks
        logger.info("KV cache: %d blocks of %d tokens per layer", num_blocks, self.block_size)

    @torch.inference_mode()
    def profile_run(self) -> None:
        """A forward of the step's full token budget (and the sampler's logits), so the peak
        activation memory can be measured before the KV cache takes the rest."""
        num_tokens = self.config.scheduler.max_num_batched_tokens or 1
        num_blocks = -(-num_tokens // self.block_size)
        saved = self.kv_caches
        self.initialize_kv_cache(num_blocks)
        hidden = self._dummy_forward(num_tokens, list(range(num_blocks)))
        if isinstance(hidden, torch.Tensor):
            num_seqs = self.config.scheduler.max_num_seqs
            self._model().compute_logits(hidden[-num_seqs:])
        self.kv_caches = saved

    def _dummy_forward(
        self, num_tokens: int, block_ids: list[int]
    ) -> torch.Tensor | IntermediateTensors:
        """One prompt of num_tokens zeros in the given blocks (profiling and warm-up)."""
        common = AttentionMetadata.build(
            [num_tokens], [num_tokens], [block_ids], self.block_size, self.device
        )
        ids, positions = self._dummy_ids_positions(torch.arange(num_tokens))
        received = None if get_pp_group().is_first_rank else self._empty_intermediate(num_tokens)
        meta = self.attn_metadata_builder.build(common)
        return self._forward(ids, positions, meta, received)

    def _dummy_decode(self, num_seqs: int) -> None:
        """A decode step of num_seqs one-token requests over 2-token contexts in block 0: the
        builder's decode metadata differs from a prefill's, so its graphs are compiled now."""
        common = AttentionMetadata.build(
            [1] * num_seqs, [2] * num_seqs, [[0]] * num_seqs, self.block_size, self.device
        )
        ids, positions = self._dummy_ids_positions(torch.ones(num_seqs, dtype=torch.int64))
        received = None if get_pp_group().is_first_rank else self._empty_intermediate(num_seqs)
        self._forward(ids, positions, self.attn_metadata_builder.build(common), received)

    def _dummy_ids_positions(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero token ids and the given positions, as views of the persistent input buffers
        (a real step's inputs are such views: compiled graphs guard on that)."""
        n = positions.numel()
        ids = self.input_buffers.input_ids.gpu[:n]
        ids.zero_()
        pos = self.input_buffers.positions.gpu[:n]
        pos.copy_(positions)
        return ids, pos

    # ---- one step ----

    @torch.inference_mode()
    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(scheduler_output)
        batch = self.input_batch
        if not batch.num_reqs:
            return ModelRunnerOutput([], {}, [])
        req_ids: list[str] = list(batch.req_ids)  # type: ignore[arg-type]  # condensed
        scheduled = scheduler_output.num_scheduled_tokens
        num_scheduled = np.array([scheduled[r] for r in req_ids], dtype=np.int32)
        num_drafts = self.spec_decode.num_draft_tokens() if self.spec_decode else None
        inputs = prepare_inputs(batch, num_scheduled, self.input_buffers, num_drafts)
        inputs.attn_metadata = self.attn_metadata_builder.build(inputs.attn_metadata)
        self._set_active_loras(num_scheduled)
        num_tokens = inputs.attn_metadata.num_actual_tokens
        hidden = self._forward(
            inputs.input_ids,
            inputs.positions,
            inputs.attn_metadata,
            self._recv_intermediate(num_tokens),
        )
        req_id_to_index = {r: i for i, r in enumerate(req_ids)}
        if isinstance(hidden, IntermediateTensors):  # a stage before the last
            get_pp_group().send(hidden.as_list())
            return ModelRunnerOutput(req_ids, req_id_to_index, [])
        prompt_logprobs = self._prompt_logprobs(hidden, inputs, req_ids)
        if scheduler_output.scheduled_spec_decode_tokens and self.spec_decode is not None:
            sampled, logprobs = self.spec_decode.sample(
                self._model(), hidden, inputs, scheduler_output, req_ids
            )
        else:
            sampled, logprobs = self._sample(hidden, inputs, scheduler_output, req_ids)
        return ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index=req_id_to_index,
            sampled_token_ids=sampled,
            logprobs=logprobs.tolists() if logprobs is not None else None,
            prompt_logprobs_dict=prompt_logprobs,
            spec_token_ids=self.spec_decode.propose(sampled, inputs) if self.spec_decode else None,
        )

    def _model(self) -> nn.Module:
        assert self.model is not None, "load_model() runs before any step"
        return self.model

    def _set_active_loras(self, num_scheduled: np.ndarray) -> None:
        """This step's adapters into device slots; each token mapped to its row's slot."""
        if self.lora_manager is None:
            return
        rows: list[LoRARequest | None] = [
            s.lora_request if s is not None else None
            for s in self.input_batch.requests[: self.input_batch.num_reqs]
        ]
        self.lora_manager.set_active_adapters(rows, num_scheduled)

    def add_lora(self, lora_request: LoRARequest) -> bool:
        if self.lora_manager is None:
            raise ValueError("LoRA is off: start the engine with lora=enabled.")
        return self.lora_manager.add_adapter(lora_request)

    def remove_lora(self, lora_int_id: int) -> bool:
        return self.lora_manager is not None and self.lora_manager.remove_adapter(lora_int_id)

    def _update_states(self, so: SchedulerOutput) -> None:
        """Apply the step's differences to the request states and the batch rows. A request
        not scheduled this step leaves the batch (keeping its state) until it is again."""
        batch = self.input_batch
        for req_id in so.finished_req_ids | so.preempted_req_ids:
            self.requests.pop(req_id, None)
            batch.remove_request(req_id)
        for req_id in [r for r in batch.req_ids if r is not None]:
            if req_id not in so.num_scheduled_tokens:
                batch.remove_request(req_id)
        joining = []
        for new in so.scheduled_new_reqs:
            state = CachedRequestState.from_new_request(new, self.device)
            self.requests[new.req_id] = state
            joining.append(state)
        cached = so.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self.requests[req_id]
            self._update_cached_request(state, cached, i)
            if req_id not in batch.req_id_to_index:
                joining.append(state)
        for state in joining:
            batch.add_request(state)
        batch.condense()
        if self.spec_decode is not None:
            self.spec_decode.update_states(so)

    def _update_cached_request(
        self, state: CachedRequestState, cached: CachedRequestData, i: int
    ) -> None:
        """A continuing request's progress, new blocks and (pp) tokens, in its state and row."""
        state.num_computed_tokens = cached.num_computed_tokens[i]
        new_blocks = cached.new_block_ids[i] or []
        state.block_ids.extend(new_blocks)
        new_tokens = cached.new_token_ids[i] if cached.new_token_ids else []
        if new_tokens:
            state.set_token_ids(state.num_computed_tokens, new_tokens)
        row = self.input_batch.req_id_to_index.get(state.req_id)
        if row is None:  # rejoining: add_request writes the whole row
            return
        self.input_batch.num_computed_tokens_cpu[row] = state.num_computed_tokens
        if new_blocks:
            self.input_batch.block_table.append_row(new_blocks, row)
        if new_tokens:
            self.input_batch.set_token_ids(row, state.num_computed_tokens, new_tokens)

    def _forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        intermediate: IntermediateTensors | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        graphs = self.cudagraph_runner
        if graphs is not None and intermediate is None and graphs.padded_size(meta) is not None:
            return graphs.run(meta)  # the inputs sit in the buffers the graphs read
        forward = self.model_forward if self.model_forward is not None else self._model()
        with set_forward_context(meta, self.kv_caches):
            return forward(input_ids, positions, self.kv_caches, meta, intermediate)

    def _empty_intermediate(self, num_tokens: int) -> IntermediateTensors:
        dtype = TORCH_DTYPES[self.config.model.dtype.value]
        return IntermediateTensors.empty(
            num_tokens, self.config.arch.hidden_size, dtype, self.device
        )

    def _recv_intermediate(self, num_tokens: int) -> IntermediateTensors | None:
        """The previous stage's residual stream for this step (None on the first stage)."""
        pp = get_pp_group()
        if pp.is_first_rank:
            return None
        received = self._empty_intermediate(num_tokens)
        pp.recv(received.as_list())
        return received

    # ---- logits -> sampler ----

    def _sample(
        self,
        hidden: torch.Tensor,
        inputs: ModelInputs,
        scheduler_output: SchedulerOutput,
        req_ids: list[str],
    ) -> tuple[list[list[int]], LogprobsTensors | None]:
        """Each row's sampled token ([] for a prefill chunk that is not the last) and the
        logprobs of the rows that sample. The one place from the logits to the sampler."""
        mask = inputs.sample_mask
        if not mask.any():
            return [[] for _ in range(inputs.num_reqs)], None
        logits = self._compute_logits(hidden[inputs.logits_indices])
        # Structured outputs: the rows' grammar bitmask, right before the sampler.
        logits = apply_grammar_bitmask(logits, scheduler_output, req_ids)
        output = self.sampler(logits, self._sampling_metadata(mask))
        tokens = output.sampled_token_ids.cpu().numpy()
        rows = np.flatnonzero(mask)
        self._record_sampled(rows, tokens[rows])
        sampled = [[int(t)] if m else [] for t, m in zip(tokens.tolist(), mask, strict=True)]
        logprobs = output.logprobs_tensors
        if logprobs is not None and not mask.all():
            logprobs = _select_rows(logprobs, torch.from_numpy(rows).to(self.device))
        return sampled, logprobs

    def _compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head over the rows that sample (its own method, so profilers can time it)."""
        return self._model().compute_logits(hidden)

    def _record_sampled(self, rows: np.ndarray, token_ids: np.ndarray) -> None:
        """The sampled tokens of the given rows, in their batch rows and request states."""
        self.input_batch.append_sampled(rows, token_ids)
        for row, token_id in zip(rows.tolist(), token_ids.tolist(), strict=True):
            self.input_batch.requests[row].output_token_ids.append(token_id)  # type: ignore[union-attr]

    def _sampling_metadata(self, mask: np.ndarray) -> SamplingMetadata:
        """The batch's metadata; a row that does not sample this step leaves its own RNG
        untouched (its draw is discarded), so a seeded request's samples do not depend on
        how its prompt was chunked."""
        metadata = self.input_batch.sampling_metadata()
        if mask.all() or not metadata.generators:
            return metadata
        generators = {r: g for r, g in metadata.generators.items() if mask[r]}
        return replace(metadata, generators=generators)

    def _prompt_logprobs(
        self, hidden: torch.Tensor, inputs: ModelInputs, req_ids: list[str]
    ) -> dict[str, LogprobsTensors | None]:
        """Logprobs of the prompt tokens this step's chunk predicts (token p+1 from row p)."""
        result: dict[str, LogprobsTensors | None] = {}
        offsets = np.cumsum(inputs.query_lens) - inputs.query_lens
        for row, req_id in enumerate(req_ids):
            state = self.requests[req_id]
            k = state.sampling_params.prompt_logprobs
            if k is None:
                continue
            start, offset = int(inputs.starts[row]), int(offsets[row])
            end = min(start + int(inputs.query_lens[row]), state.num_prompt_tokens - 1)
            if start < end:
                rows = hidden[offset : offset + end - start]
                logprobs = compute_logprobs(self._model().compute_logits(rows))
                targets = torch.tensor(
                    state.prompt_token_ids[start + 1 : end + 1], device=self.device
                )
                result[req_id] = gather_logprobs(logprobs, self._num_logprobs(k), targets)
        return result

    def _num_logprobs(self, k: int) -> int:
        return self.vocab_size if k == -1 else k


def _select_rows(logprobs: LogprobsTensors, rows: torch.Tensor) -> LogprobsTensors:
    return LogprobsTensors(
        logprobs.logprob_token_ids[rows],
        logprobs.logprobs[rows],
        logprobs.selected_token_ranks[rows],
    )
