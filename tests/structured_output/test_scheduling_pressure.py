"""Issue 16: structured requests under chunked prefill, preemption by recompute and n > 1.

The offline `LLM` on the tiny model with a token budget far below the prompt (every prompt is
prefilled in chunks) and a KV cache too small for the batch (requests are preempted and
recomputed): every sample still obeys its schema, and a greedy structured request gives the
same tokens as when it runs alone.
"""

from __future__ import annotations

import json

import jsonschema
import partial_json_parser
import pytest

from vllm_hydra import LLM, SamplingParams
from vllm_hydra.benchmarks.workloads import open_json_schema
from vllm_hydra.sampling_params import StructuredOutputsParams

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {
            "type": "array",
            "items": {"enum": ["a", "b", "c"]},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
STRUCTURED = StructuredOutputsParams(json=json.dumps(SCHEMA))
# ~70 tokens: three chunks of the 32-token budget.
PROMPT = " ".join(["The old king walked through the quiet garden at night."] * 6)
BUDGET_TOKENS = 32
OVERRIDES = [
    "model=tiny",
    "model.dtype=float32",
    "model.max_model_len=256",
    # 19 usable blocks of 16 tokens: room for about two of these requests at a time.
    "cache.num_blocks_override=20",
    "cache.enable_prefix_caching=false",
    f"scheduler.max_num_batched_tokens={BUDGET_TOKENS}",
    "scheduler.max_num_seqs=8",
    "structured_outputs.disable_any_whitespace=true",
]


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(OVERRIDES)


def _structured(**kwargs: object) -> SamplingParams:
    return SamplingParams(max_tokens=60, structured_outputs=STRUCTURED, **kwargs)  # type: ignore[arg-type]


def test_structured_samples_obey_under_chunking_and_preemption(llm: LLM) -> None:
    scheduler = llm.engine_core.engine_core.scheduler  # type: ignore[union-attr]
    preemptions_before = scheduler.num_preemptions
    prompt_len = len(llm.tokenizer.encode(PROMPT))
    assert prompt_len > 2 * BUDGET_TOKENS  # every prompt needs several prefill chunks

    greedy = _structured(temperature=0.0)
    alone = llm.generate(PROMPT, greedy, use_tqdm=False)[0].outputs[0]
    sampled = [_structured(temperature=1.0, seed=seed, n=3) for seed in range(2)]
    free = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    outputs = llm.generate([PROMPT] * 4, [*sampled, greedy, free], use_tqdm=False)

    assert scheduler.num_preemptions > preemptions_before  # the batch did not fit
    samples = [o for output in outputs[:3] for o in output.outputs]
    assert len(samples) == 7
    for sample in samples:
        assert sample.finish_reason == "stop", sample.text
        jsonschema.validate(json.loads(sample.text), SCHEMA)
    assert len({s.text for s in samples[:6]}) > 3  # really sampled, n=3 included
    assert outputs[2].outputs[0].token_ids == alone.token_ids  # preempted, recomputed, same
    assert len(outputs[3].outputs[0].token_ids) == 40


def test_bench_json_schema_cannot_close_before_its_length(llm: LLM) -> None:
    """The bench app's structured workload (benchmarks/workloads.py): held to its schema the
    model generates exactly max_tokens, as the free workload does with ignore_eos."""
    schema = json.dumps(open_json_schema(24))
    params = SamplingParams(
        max_tokens=24,
        temperature=1.0,
        seed=0,
        structured_outputs=StructuredOutputsParams(json=schema),
    )
    (output,) = llm.generate("Numbers:", params, use_tqdm=False)[0].outputs
    assert output.finish_reason == "length" and len(output.token_ids) == 24
    assert isinstance(partial_json_parser.loads(output.text)["values"], list)
