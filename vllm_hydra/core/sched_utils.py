"""`check_stop`: whether a request is done after a token was appended (vLLM's sched/utils.py).

Stop strings are not checked here: they need detokenized text, which the frontend has.
"""

from __future__ import annotations

from vllm_hydra.core.request import Request, RequestStatus


def check_stop(request: Request, max_model_len: int) -> bool:
    """Set the request's final status and return True if its last token ends it."""
    params = request.sampling_params
    last_token_id = request.output_token_ids[-1]
    # EOS and stop tokens count only once min_tokens are out (the sampler masks them before).
    if request.num_output_tokens >= params.min_tokens:
        if not params.ignore_eos and last_token_id == request.eos_token_id:
            request.status = RequestStatus.FINISHED_STOPPED
            return True
        if last_token_id in params.stop_token_ids:
            request.status = RequestStatus.FINISHED_STOPPED
            request.stop_reason = last_token_id
            return True
    # The length limits hold whatever min_tokens says: max_model_len is a hard bound.
    max_tokens = request.max_tokens
    if request.num_tokens >= max_model_len or (
        max_tokens is not None and request.num_output_tokens >= max_tokens
    ):
        request.status = RequestStatus.FINISHED_LENGTH_CAPPED
        return True
    return False
