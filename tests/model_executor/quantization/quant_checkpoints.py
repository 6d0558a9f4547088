"""Tiny quantized checkpoints packed by hand from each format's spec, beside the dequantized
weights saved as an ordinary checkpoint (what `transformers` runs as the reference).

A random fp32 Llama is quantized round-to-nearest per group; its linear weights are written
packed (AWQ, GPTQ, compressed-tensors) with config.json's quantization_config, and the same
codes dequantized ((q - z) * s in fp32) replace the weights of the reference checkpoint. Packing
here is written from the formats' descriptions, independently of the engine's unpacking.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tests.model_factory import write_random_checkpoint

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Large enough for group 128 on every input, split in two (tp=2) on the row-parallel ones.
QUANT_MODEL = dict(
    hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2
)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] -> [out, groups, group]."""
    size = w.shape[1] if group_size == -1 else group_size
    return w.reshape(w.shape[0], -1, size)


def quantize_asym_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, ...]:
    """codes 0..15 [out, in], fp16 scales [out, G], integer zeros [out, G]."""
    g = _groups(w, group_size)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    scale = ((hi - lo) / 15).clamp(min=1e-6).half()
    zero = torch.round(-lo / scale.float()).clamp(0, 15)
    q = torch.round(g / scale.float()[..., None]) + zero[..., None]
    return q.clamp(0, 15).reshape(w.shape).long(), scale, zero.long()


def quantize_sym(w: torch.Tensor, group_size: int, bits: int) -> tuple[torch.Tensor, ...]:
    """Signed codes [out, in] in [-2^(b-1), 2^(b-1) - 1], fp16 scales [out, G]."""
    qmax = 2 ** (bits - 1) - 1
    g = _groups(w, group_size)
    scale = (g.abs().amax(-1) / qmax).clamp(min=1e-6).half()
    q = torch.round(g / scale.float()[..., None]).clamp(-qmax - 1, qmax)
    return q.reshape(w.shape).long(), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """(q - z) * s in fp32, group by group."""
    g = q.shape[1] // scale.shape[1]
    z = 0 if zero is None else zero.float().repeat_interleave(g, 1)
    return (q.float() - z) * scale.float().repeat_interleave(g, 1)


def to_int32(words: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit words held in int64 -> int32 with the same bits."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_along_last(codes: torch.Tensor, order: tuple[int, ...] = tuple(range(8))) -> torch.Tensor:
    """Eight 4-bit codes per int32 word along the last dim; nibble i holds position order[i]."""
    c = codes.reshape(*codes.shape[:-1], -1, 8)
    words = torch.zeros(c.shape[:-1], dtype=torch.int64)
    for i, pos in enumerate(order):
        words |= c[..., pos] << (4 * i)
    return to_int32(words)


def awq_layer(w: torch.Tensor, group_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    q, s, z = quantize_asym_int4(w, group_size)
    packed = {
        "qweight": pack_along_last(q.t(), AWQ_ORDER),  # [in, out / 8]
        "qzeros": pack_along_last(z.t(), AWQ_ORDER),  # [G, out / 8]
        "scales": s.t().contiguous(),  # [G, out]
    }
    return packed, dequantize(q, s, z)


def gptq_layer(w: torch.Tensor, group_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    q, s, z = quantize_asym_int4(w, group_size)
    size = w.shape[1] if group_size == -1 else group_size
    packed = {
        "qweight": pack_along_last(q).t().contiguous(),  # along in: [in / 8, out]
        "qzeros": pack_along_last((z - 1).t()),  # v1 stores zero - 1
        "scales": s.t().contiguous(),
        "g_idx": (torch.arange(w.shape[1]) // size).to(torch.int32),
    }
    return packed, dequantize(q, s, z)


def ct_w4a16_layer(
    w: torch.Tensor, group_size: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    q, s = quantize_sym(w, group_size, 4)
    packed = {
        "weight_packed": pack_along_last(q + 8),  # [out, in / 8], stored offset by 8
        "weight_scale": s,
        "weight_shape": torch.tensor(list(w.shape), dtype=torch.int64),
    }
    return packed, dequantize(q, s, None)


def ct_w8a16_layer(
    w: torch.Tensor, group_size: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    q, s = quantize_sym(w, group_size, 8)
    return {"weight": q.to(torch.int8), "weight_scale": s}, dequantize(q, s, None)


def ct_fp8_layer(w: torch.Tensor, group_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    scale = w.abs().amax(1, keepdim=True) / torch.finfo(torch.float8_e4m3fn).max
    q = (w / scale).to(torch.float8_e4m3fn)
    return {"weight": q, "weight_scale": scale}, q.float() * scale


def _ct_config(fmt: str, weights: dict[str, Any]) -> dict[str, Any]:
    return {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "config_groups": {
            "group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}
        },
        "ignore": ["lm_head"],
    }


def quantization_config(fmt: str, group_size: int) -> dict[str, Any]:
    if fmt == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
                "version": "gemm"}  # fmt: skip
    if fmt == "gptq":
        return {"quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False,
                "sym": False, "checkpoint_format": "gptq"}  # fmt: skip
    strategy = "channel" if group_size == -1 else "group"
    gs = None if group_size == -1 else group_size
    if fmt == "ct-w4a16":
        w = {
            "num_bits": 4,
            "type": "int",
            "symmetric": True,
            "strategy": strategy,
            "group_size": gs,
        }
        return _ct_config("pack-quantized", w)
    if fmt == "ct-w8a16":
        w = {
            "num_bits": 8,
            "type": "int",
            "symmetric": True,
            "strategy": strategy,
            "group_size": gs,
        }
        return _ct_config("int-quantized", w)
    w = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"}
    return _ct_config("float-quantized", w)


LAYER_PACKERS: dict[str, Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor]]] = {
    "awq": awq_layer,
    "gptq": gptq_layer,
    "ct-w4a16": ct_w4a16_layer,
    "ct-w8a16": ct_w8a16_layer,
    "ct-fp8": ct_fp8_layer,
}


def write_quantized_pair(fmt: str, group_size: int, root: Path) -> tuple[Path, Path]:
    """(quantized checkpoint, dequantized reference checkpoint) of one random tiny Llama."""
    ref = write_random_checkpoint("llama", root / "reference", **QUANT_MODEL)
    quant = root / "quantized"
    quant.mkdir()
    tensors = load_file(str(ref / "model.safetensors"))
    packed: dict[str, torch.Tensor] = {}
    for name, tensor in list(tensors.items()):
        prefix = name.removesuffix(".weight")
        if prefix.rpartition(".")[2] not in LINEAR:
            packed[name] = tensor
            continue
        parts, dequantized = LAYER_PACKERS[fmt](tensor, group_size)
        packed |= {f"{prefix}.{k}": v for k, v in parts.items()}
        tensors[name] = dequantized.contiguous()
    save_file(tensors, str(ref / "model.safetensors"), metadata={"format": "pt"})
    save_file(packed, str(quant / "model.safetensors"), metadata={"format": "pt"})
    for f in ref.iterdir():
        if f.name != "model.safetensors":
            (quant / f.name).write_bytes(f.read_bytes())
    config = json.loads((quant / "config.json").read_text())
    config["quantization_config"] = quantization_config(fmt, group_size)
    (quant / "config.json").write_text(json.dumps(config, indent=2))
    return quant, ref
