"""`StructuredOutputRequest`: a request's constraint, its compiled grammar and its matcher."""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

from vllm_hydra.sampling_params import SamplingParamsError, StructuredOutputsParams
from vllm_hydra.structured_output.backend_types import (
    StructuredOutputGrammar,
    StructuredOutputKey,
    StructuredOutputOptions,
)

# The constraint fields, by the request field that sets them (as the OpenAI API spells it).
_KINDS = {
    "json": StructuredOutputOptions.JSON,
    "regex": StructuredOutputOptions.REGEX,
    "choice": StructuredOutputOptions.CHOICE,
    "grammar": StructuredOutputOptions.GRAMMAR,
    "json_object": StructuredOutputOptions.JSON_OBJECT,
    "structural_tag": StructuredOutputOptions.STRUCTURAL_TAG,
}
PARAM_OF_KIND = {kind: f"structured_outputs.{name}" for name, kind in _KINDS.items()}
JSON_OBJECT_SCHEMA = '{"type": "object"}'


class StructuredOutputRequest:
    """Lives on the engine's `Request`. `compiled` is the (shared, cached) compile future; the
    matcher is made from it once it is done, when the scheduler first finds it ready."""

    def __init__(self, params: StructuredOutputsParams) -> None:
        self.params = params
        self.structured_output_key = get_structured_output_key(params)
        self.compiled: Future[Any] | None = None
        self.grammar: StructuredOutputGrammar | None = None

    def free(self) -> None:
        """Drop the matcher (the compiled grammar stays cached for other requests)."""
        self.compiled = None
        self.grammar = None


def get_structured_output_key(params: StructuredOutputsParams) -> StructuredOutputKey:
    """(kind, spec) of the one constraint set; SamplingParamsError if not exactly one is."""
    present = [name for name in _KINDS if getattr(params, name) not in (None, False)]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise SamplingParamsError(
            "structured_outputs",
            f"structured_outputs must set exactly one of {', '.join(_KINDS)} (found: {found}).",
        )
    name = present[0]
    value = getattr(params, name)
    if name == "json_object":
        return StructuredOutputOptions.JSON_OBJECT, JSON_OBJECT_SCHEMA
    if name == "choice":
        if not value:
            raise SamplingParamsError("structured_outputs.choice", "choice must not be empty.")
        return StructuredOutputOptions.CHOICE, json.dumps(value)
    if name == "json" and not isinstance(value, str):
        return StructuredOutputOptions.JSON, json.dumps(value)
    return _KINDS[name], value
