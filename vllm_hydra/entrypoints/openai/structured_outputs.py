"""A request's `response_format` / `structured_outputs` fields as engine StructuredOutputsParams
(vLLM's `_get_structured_outputs` in protocol.py)."""

from __future__ import annotations

import json

from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import ResponseFormat, SamplingRequest
from vllm_hydra.sampling_params import StructuredOutputsParams


def structured_outputs_params(request: SamplingRequest) -> StructuredOutputsParams | None:
    """The one constraint the request asks for; None for free text. Both fields at once is a
    400: which one should win is not for the server to guess."""
    fmt, so = request.response_format, request.structured_outputs
    if so is not None and fmt is not None and fmt.type != "text":
        raise BadRequestError(
            "Set either response_format or structured_outputs, not both.",
            param="structured_outputs",
        )
    if so is not None:
        return StructuredOutputsParams(
            json=so.json_spec,
            regex=so.regex,
            choice=so.choice,
            grammar=so.grammar,
            json_object=so.json_object,
            structural_tag=so.structural_tag,
        )
    if fmt is not None:
        return _from_response_format(fmt)
    return None


def _from_response_format(fmt: ResponseFormat) -> StructuredOutputsParams | None:
    if fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    if fmt.json_schema is None or fmt.json_schema.json_schema is None:
        raise BadRequestError(
            'response_format of type "json_schema" needs json_schema.schema.',
            param="response_format",
        )
    # strict or not, the output is held to the schema (as in vLLM).
    return StructuredOutputsParams(json=json.dumps(fmt.json_schema.json_schema))


def structured_output_renames(request: SamplingRequest) -> dict[str, str]:
    """The engine names its errors by structured_outputs.<kind>; a constraint that came from
    response_format is reported under that name."""
    if request.structured_outputs is not None or request.response_format is None:
        return {}
    kinds = ("json", "json_object", "regex", "choice", "grammar", "structural_tag")
    return {f"structured_outputs.{kind}": "response_format" for kind in kinds}
