"""Frontend checks of a structured request: compile-check its spec and pick its backend, so an
invalid schema, regex or grammar is a 400 naming the field before the engine sees it."""

from __future__ import annotations

import msgspec

from vllm_hydra.config.structured_outputs import StructuredOutputsBackend, StructuredOutputsConfig
from vllm_hydra.sampling_params import SamplingParamsError, StructuredOutputsParams
from vllm_hydra.structured_output.backend_guidance import validate_guidance
from vllm_hydra.structured_output.backend_xgrammar import validate_xgrammar
from vllm_hydra.structured_output.request import PARAM_OF_KIND, get_structured_output_key

_VALIDATORS = {
    StructuredOutputsBackend.xgrammar: validate_xgrammar,
    StructuredOutputsBackend.guidance: validate_guidance,
}


def validate_structured_output(
    params: StructuredOutputsParams, config: StructuredOutputsConfig
) -> StructuredOutputsParams:
    """`params` with the backend that accepts them set; SamplingParamsError if none does."""
    kind, spec = get_structured_output_key(params)
    candidates = [config.backend]
    if config.backend is StructuredOutputsBackend.auto:
        candidates = [StructuredOutputsBackend.xgrammar]
        if not config.disable_fallback:
            candidates.append(StructuredOutputsBackend.guidance)
    errors = []
    for backend in candidates:
        try:
            _VALIDATORS[backend](kind, spec)
        except ValueError as e:
            errors.append(f"{backend.value}: {e}")
            continue
        return msgspec.structs.replace(params, backend=backend.value)
    param = PARAM_OF_KIND[kind]
    raise SamplingParamsError(param, f"Invalid {param}: {'; '.join(errors)}")
