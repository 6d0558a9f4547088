"""The Triton interpreter (TRITON_INTERPRET=1) for the CPU tests of the Triton kernels.

Triton reads TRITON_INTERPRET when each @triton.jit function is defined, its own library
(triton.language: tl.cdiv, tl.max, ...) included, and importing torch.compile can load Triton
early. So the root conftest turns the interpreter on before any test module is imported, and
the tests that need it skip, with the reason, when Triton was loaded without it.
"""

from __future__ import annotations

import os

import pytest


def enable_on_cpu() -> None:
    """Turn the interpreter on unless the machine has a GPU or the caller chose already."""
    import torch

    if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


def _interpreted() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return os.environ.get("TRITON_INTERPRET") == "1" and isinstance(tl.cdiv, InterpretedFunction)


enable_on_cpu()  # on import: the root conftest imports this module before any test module
requires_interpreter = pytest.mark.skipif(
    not _interpreted(),
    reason="Triton was loaded without TRITON_INTERPRET=1 (set it before Python starts: "
    "TRITON_INTERPRET=1 pytest ...)",
)
