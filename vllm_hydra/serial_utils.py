"""msgpack for what crosses from the executor to its workers and back (vLLM's serial_utils).

`SchedulerOutput` and `ModelRunnerOutput` are plain dataclasses; msgspec encodes them field by
field (no pickle). Tensors, which only appear in prompt logprobs, travel as (dtype, shape,
raw bytes).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import torch

_DTYPES = {
    str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32)
}


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return (str(t.dtype), list(t.shape), t.view(torch.uint8).numpy().tobytes())
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is torch.Tensor:
        dtype, shape, data = obj
        raw = torch.from_numpy(np.frombuffer(bytearray(data), dtype=np.uint8))
        return raw.view(_DTYPES[dtype]).reshape(shape)
    raise NotImplementedError(f"cannot decode {type_.__name__}")


class MsgpackEncoder:
    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj)


class MsgpackDecoder:
    """Decodes into `type_` (a dataclass or msgspec Struct, checked as it goes)."""

    def __init__(self, type_: Any) -> None:
        self._decoder = msgspec.msgpack.Decoder(type_, dec_hook=_dec_hook)

    def decode(self, data: bytes | memoryview) -> Any:
        return self._decoder.decode(data)
