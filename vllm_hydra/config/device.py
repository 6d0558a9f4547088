"""`device` section: which accelerator runs the model."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class DeviceType(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass(frozen=True)
class DeviceConfig:
    # `auto` picks cuda when torch sees a CUDA device, else cpu.
    type: DeviceType = DeviceType.auto
    # Memory per device to plan with, in GiB. Unset: the real device's total memory (CUDA), or,
    # for a dry run that targets an absent GPU, 80 GiB (an H100). A real run may not exceed the
    # device's memory.
    # Takes a number in GiB or a size with its unit (24GiB).
    memory_gib: Any = None
