"""`ModelRunner`: runs one scheduled step on a device (the seed's GPUModelRunner, device-agnostic).

It keeps each request's tokens, blocks and RNG between steps (the scheduler sends only what
changed), flattens the step into one batch of prefills and decodes, runs the model over the
paged KV cache, samples, and computes logprobs.

Under pipeline parallelism a stage runs only its layers: it receives the residual stream from
the previous stage, sends its own to the next, and only the last stage computes logits and
samples. Stages before the last learn each request's sampled tokens from the scheduler
(`CachedRequestData.new_token_ids`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from vllm_hydra.attention.backends.abstract import AttentionMetadata
from vllm_hydra.attention.selector import get_attn_backend
from vllm_hydra.compilation.cuda_graph import CUDAGraphRunner
from vllm_hydra.compilation.torch_compile import ModelForward, compile_model
from vllm_hydra.config.compilation import CompilationMode
from vllm_hydra.config.memory_plan import kv_heads_per_rank
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.distributed.parallel_state import get_pp_group
from vllm_hydra.distributed.utils import get_pp_indices
from vllm_hydra.model_executor.model_loader import get_model
from vllm_hydra.outputs import LogprobsTensors, ModelRunnerOutput
from vllm_hydra.sample.logprobs import compute_logprobs, gather_logprobs
from vllm_hydra.sample.metadata import SamplingMetadata
from vllm_hydra.sample.sampler import Sampler
from vllm_hydra.sampling_params import SamplingParams
from vllm_hydra.sequence import IntermediateTensors
from vllm_hydra.structured_output.bitmask import apply_grammar_bitmask
from vllm_hydra.worker.model_inputs import ModelInputs, prepare_inputs
from vllm_hydra.worker.request_state import CachedRequestState

logger = logging.getLogger(__name__)

PROFILE_PARAMS = SamplingParams(temperature=0.0, max_tokens=1)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelRunner:
    def __init__(self, vllm_config: VllmConfig, device: torch.device) -> None:
        self.config = vllm_config
        self.device = device
        self.block_size = vllm_config.cache.block_size
        self.vocab_size = vllm_config.arch.vocab_size
        self.kv_cache_dtype = TORCH_DTYPES[vllm_config.cache.cache_dtype.value]
        self.attn_backend = get_attn_backend(vllm_config.attention.backend.value)
        self.model: nn.Module | None = None
        # The model forward as compilation.mode runs it (eager or under torch.compile).
        self.model_forward: ModelForward | None = None
        self.cudagraph_runner: CUDAGraphRunner | None = None
        self.kv_caches: list[torch.Tensor] = []
        self.requests: dict[str, CachedRequestState] = {}
        self.sampler = Sampler()

    # ---- set-up ----

    def load_model(self) -> None:
        self.model = get_model(self.config)
        self.model_forward = self.model
        if self.config.compilation.mode is CompilationMode.torch_compile:
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

    def _warm_up_compiled_model(self) -> None:
        """A 2-token batch (the graphs dynamic in tokens) and a 1-token one (Dynamo
        specialises size 1). Their dummy K/V go to the null block 0, which nothing reads."""
        assert self.model_forward is not None
        for kv_cache in self.kv_caches:
            # Fixed shapes: else Dynamo's duck sizing ties a cache dim to an equal token count.
            torch._dynamo.mark_static(kv_cache)
        for n in (2, 1):
            meta = AttentionMetadata.build([n], [n], [[0] * n], self.block_size, self.device)
            ids = torch.zeros(n, dtype=torch.int64, device=self.device)
            positions = torch.arange(n, device=self.device)
            self.model_forward(ids, positions, self.kv_caches, meta)

    def _capture_cudagraphs(self) -> None:
        compilation = self.config.compilation
        self.cudagraph_runner = CUDAGraphRunner(
            self._model(),
            self.kv_caches,
            compilation.cudagraph_capture_sizes or [1],
            self.config.model.max_model_len or 1,
            self.block_size,
            self.device,
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
        return numel * self.kv_cache_dtype.itemsize * self.num_layers()

    def initialize_kv_cache(self, num_blocks: int) -> None:
        shape = self.kv_cache_shape(num_blocks)
        self.kv_caches = [
            torch.zeros(shape, dtype=self.kv_cache_dtype, device=self.device)
            for _ in range(self.num_layers())
        ]
        logger.info("KV cache: %d blocks of %d tokens per layer", num_blocks, self.block_size)

    @torch.inference_mode()
    def profile_run(self) -> None:
        """A forward of the step's full token budget (and the sampler's logits), so the peak
        activation memory can be measured before the KV cache takes the rest."""
        num_tokens = self.config.scheduler.max_num_batched_tokens or 1
        num_blocks = -(-num_tokens // self.block_size)
        saved = self.kv_caches
        self.initialize_kv_cache(num_blocks)
        state = CachedRequestState(
            "profile", [0] * num_tokens, PROFILE_PARAMS, None, list(range(num_blocks)), 0, None
        )
        inputs = prepare_inputs([state], [num_tokens], self.block_size, self.device)
        received = None if get_pp_group().is_first_rank else self._empty_intermediate(num_tokens)
        hidden = self._forward(inputs, received)
        if isinstance(hidden, torch.Tensor):
            num_seqs = self.config.scheduler.max_num_seqs
            self._model().compute_logits(hidden[-num_seqs:])
        self.kv_caches = saved

    # ---- one step ----

    @torch.inference_mode()
    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(scheduler_output)
        req_ids = list(scheduler_output.num_scheduled_tokens)
        if not req_ids:
            return ModelRunnerOutput([], {}, [])
        states = [self.requests[r] for r in req_ids]
        query_lens = [scheduler_output.num_scheduled_tokens[r] for r in req_ids]
        inputs = prepare_inputs(states, query_lens, self.block_size, self.device)
        hidden = self._forward(inputs, self._recv_intermediate(inputs))
        if isinstance(hidden, IntermediateTensors):  # a stage before the last
            get_pp_group().send(hidden.as_list())
            return ModelRunnerOutput(req_ids, {r: i for i, r in enumerate(req_ids)}, [])
        prompt_logprobs = self._prompt_logprobs(hidden, inputs)
        sampled, logprobs = self._sample(hidden, inputs, scheduler_output)
        sampled_lists = [sampled.get(r, []) for r in req_ids]
        return ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index={r: i for i, r in enumerate(req_ids)},
            sampled_token_ids=sampled_lists,
            logprobs=logprobs.tolists() if logprobs is not None else None,
            prompt_logprobs_dict=prompt_logprobs,
        )

    def _model(self) -> nn.Module:
        assert self.model is not None, "load_model() runs before any step"
        return self.model

    def _update_states(self, so: SchedulerOutput) -> None:
        for req_id in so.finished_req_ids | so.preempted_req_ids:
            self.requests.pop(req_id, None)
        for new in so.scheduled_new_reqs:
            self.requests[new.req_id] = CachedRequestState.from_new_request(new, self.device)
        cached = so.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self.requests[req_id]
            state.num_computed_tokens = cached.num_computed_tokens[i]
            if cached.new_block_ids[i]:
                state.block_ids.extend(cached.new_block_ids[i] or [])
            if cached.new_token_ids and cached.new_token_ids[i]:
                state.set_token_ids(state.num_computed_tokens, cached.new_token_ids[i])

    def _forward(
        self, inputs: ModelInputs, intermediate: IntermediateTensors | None = None
    ) -> torch.Tensor | IntermediateTensors:
        meta = inputs.attn_metadata
        graphs = self.cudagraph_runner
        if graphs is not None and intermediate is None and graphs.padded_size(meta) is not None:
            return graphs.run(inputs.input_ids, inputs.positions, meta)
        forward = self.model_forward if self.model_forward is not None else self._model()
        return forward(inputs.input_ids, inputs.positions, self.kv_caches, meta, intermediate)

    def _empty_intermediate(self, num_tokens: int) -> IntermediateTensors:
        dtype = TORCH_DTYPES[self.config.model.dtype.value]
        return IntermediateTensors.empty(
            num_tokens, self.config.arch.hidden_size, dtype, self.device
        )

    def _recv_intermediate(self, inputs: ModelInputs) -> IntermediateTensors | None:
        """The previous stage's residual stream for this step (None on the first stage)."""
        pp = get_pp_group()
        if pp.is_first_rank:
            return None
        received = self._empty_intermediate(inputs.attn_metadata.num_actual_tokens)
        pp.recv(received.as_list())
        return received

    def _sample(
        self, hidden: torch.Tensor, inputs: ModelInputs, scheduler_output: SchedulerOutput
    ) -> tuple[dict[str, list[int]], LogprobsTensors | None]:
        if not inputs.sample_req_ids:
            return {}, None
        states = [self.requests[r] for r in inputs.sample_req_ids]
        logits = self._model().compute_logits(hidden[inputs.logits_indices])
        logits = apply_grammar_bitmask(logits, scheduler_output, inputs.sample_req_ids)
        metadata = SamplingMetadata.build(
            params=[s.sampling_params for s in states],
            prompt_token_ids=[s.prompt_token_ids for s in states],
            output_token_ids=[s.output_token_ids for s in states],
            generators={i: s.generator for i, s in enumerate(states) if s.generator is not None},
            vocab_size=self.vocab_size,
            device=self.device,
            eos_token_ids=[s.eos_token_id for s in states],
        )
        output = self.sampler(logits, metadata)
        tokens = output.sampled_token_ids.tolist()
        for state, token in zip(states, tokens, strict=True):
            state.output_token_ids.append(token)
        return {r: [t] for r, t in zip(inputs.sample_req_ids, tokens, strict=True)}, (
            output.logprobs_tensors
        )

    def _prompt_logprobs(
        self, hidden: torch.Tensor, inputs: ModelInputs
    ) -> dict[str, LogprobsTensors | None]:
        """Logprobs of the prompt tokens this step's chunk predicts (token p+1 from row p)."""
        result: dict[str, LogprobsTensors | None] = {}
        offset = 0
        for req_id, start, n in zip(inputs.req_ids, inputs.starts, inputs.query_lens, strict=True):
            state = self.requests[req_id]
            k = state.sampling_params.prompt_logprobs
            end = min(start + n, state.num_prompt_tokens - 1)
            if k is not None and start < end:
                rows = hidden[offset : offset + end - start]
                logprobs = compute_logprobs(self._model().compute_logits(rows))
                targets = torch.tensor(
                    state.prompt_token_ids[start + 1 : end + 1], device=self.device
                )
                result[req_id] = gather_logprobs(logprobs, self._num_logprobs(k), targets)
            offset += n
        return result

    def _num_logprobs(self, k: int) -> int:
        return self.vocab_size if k == -1 else k
