"""`serve.py --help`: the project's own help page, from the schema and the config tree.

Hydra's stock page lists every config group (internal ones included) and the composed YAML with
no word on what a key means. This one lists the groups a user picks from, with their options
(plugins' included), and every key of every section with its default and the comment that
documents it in the schema dataclass. `serve.py --help <section>` shows one section.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from vllm_hydra.config.schema_keys import _section_type
from vllm_hydra.config.store import CONF_DIR
from vllm_hydra.config.vllm import ServeConfig

# Groups that are not choices a user of serve.py makes.
INTERNAL_GROUPS = {"schema", "bench", "hparams_search", "hydra"}
# Overlay groups, listed after the section groups.
OVERLAY_GROUPS = ("profile", "local")

# What a key means where its schema field has no comment yet (the schema's comment wins).
FIELD_NOTES = {
    "model.dtype": "Weights and activations. auto: the checkpoint's dtype on CUDA (float32 "
    "served as bfloat16); on CPU bfloat16 where the CPU computes it natively, else float32.",
    "model.seed": "Seed of the sampler's random generator (every rank seeds alike).",
    "model.trust_remote_code": "Refused when true: the engine never runs model code shipped "
    "with a checkpoint; a plugin can register an architecture instead.",
    "cache.block_size": "Tokens per KV cache block (a power of two up to 256).",
    "cache.cache_dtype": "dtype of the KV cache; auto: the model's dtype.",
    "cache.enable_prefix_caching": "Reuse the KV blocks of a prompt prefix seen before.",
    "parallel.tp": "Tensor-parallel ranks: each layer's weights split over this many devices.",
    "parallel.pp": "Pipeline-parallel stages: the layers split over this many devices.",
    "parallel.dp": "Data-parallel engines, each with its own weights and KV cache.",
    "parallel.backend": "Executor: uni (one rank in the engine process), mp (worker "
    "processes), ray (workers on other machines); auto: uni for one rank, mp for more.",
    "parallel.nnodes": "Machines the workers span (needs parallel.backend=ray).",
    "parallel.master_addr": "Address of torch.distributed's rendezvous for tp/pp workers.",
    "scheduler.max_num_seqs": "Requests running at once (the batch's rows).",
    "scheduler.enable_chunked_prefill": "Split long prompts over steps within the token "
    "budget; false: a prompt is scheduled whole (max_num_batched_tokens >= max_model_len).",
    "scheduler.policy": "fcfs: arrival order; priority: the request's priority, then arrival.",
    "lora.enabled": "Serve LoRA adapters.",
    "lora.max_loras": "Adapters in one batch.",
    "lora.max_lora_rank": "The largest adapter rank.",
    "attention.backend": "auto: triton on CUDA, torch on CPU.",
    "load.format": "auto: safetensors from model.path; dummy: random weights, no files read.",
    "compilation.mode": "none: eager; torch_compile: torch.compile; cudagraph: CUDA graphs "
    "(CUDA with attention.backend=triton).",
    "observability.log_stats": "Log throughput and KV cache usage every stats_interval_s.",
    "observability.stats_interval_s": "Seconds between stats log lines.",
    "observability.metrics": "Serve Prometheus metrics (vLLM's vllm: names) on /metrics.",
    "observability.otlp_traces_endpoint": "Send OpenTelemetry traces of each request to this "
    "OTLP/HTTP endpoint (needs the tracing extra).",
    "speculative.method": "Speculative decoding method; none: off.",
    "speculative.num_speculative_tokens": "Draft tokens proposed per step.",
    "speculative.prompt_lookup_min": "ngram: shortest n-gram matched in the prompt.",
    "speculative.prompt_lookup_max": "ngram: longest n-gram matched in the prompt.",
    "structured_outputs.backend": "Grammar backend for response_format and structured_outputs; "
    "auto: xgrammar, guidance where xgrammar cannot compile the request.",
    "structured_outputs.tool_call_parser": "How tool calls are parsed from the output.",
    "server.host": "Address the HTTP server binds.",
    "server.port": "Port the HTTP server binds (0: a free one).",
}

USAGE = """\
usage: python serve.py [group=option ...] [section.key=value ...] [dry_run=true]
       python serve.py --help [section]     this page, or one section's keys
       python serve.py -m dry_run=true k=a,b     a table of plans, one row per job

Examples:
  python serve.py                                    the embedded tiny model on 127.0.0.1:8000
  python serve.py model=llama3 parallel.tp=4         another composition
  python serve.py profile=h100-llama3-8b             a committed deployment profile
  python serve.py dry_run=true model=llama3 device=cuda device.memory_gib=24
                                                     validate, plan memory, load nothing
  python serve.py model.max_model_len=auto cache.kv_cache_memory_gib=512MiB
  python serve.py --cfg job                          the composed config (Hydra's flags work)

Sizes: token counts take 32k (32,000) or 32K (32,768); byte sizes take 512MiB, 4GiB, 4GB.
Secrets: server.api_key is read from VLLM_HYDRA_API_KEY and never written to the run dir.
Hydra's own help: python serve.py --hydra-help
"""


def field_docs(cls: type) -> dict[str, str]:
    """Each field's comment (the `#` lines right above it in the dataclass source, and one on
    its own line)."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    docs = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, row = [], node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                above.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            line = lines[node.lineno - 1]
            if "  # " in line:  # a comment on the field's own line
                above.append(line.split("  # ", 1)[1].strip())
            docs[node.target.id] = " ".join(above)
    return docs


def _type_text(hint: Any) -> str:
    if typing.get_origin(hint) in (dict, list):
        return typing.get_origin(hint).__name__
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    inner = args[0] if args else hint
    if typing.get_origin(inner) in (dict, list):
        return typing.get_origin(inner).__name__
    if isinstance(inner, type) and issubclass(inner, Enum):
        return "{" + ", ".join(str(m.value) for m in inner) + "}"
    if inner is Any:
        return "size"
    return getattr(inner, "__name__", str(inner)).replace("typing.", "")


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def section_help(name: str, cls: type) -> str:
    """`name.key  type  (default: ...)` and the key's meaning, for every key of one section."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    out = [f"{name}  ({cls.__name__})"]
    for f in dataclasses.fields(cls):
        key = f"{name}.{f.name}"
        out.append(f"  {key}: {_type_text(hints[f.name])} = {_default_text(f)}")
        doc = docs.get(f.name) or FIELD_NOTES.get(key, "")
        out.extend(textwrap.wrap(doc, 96, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(out)


def sections() -> dict[str, type]:
    hints = typing.get_type_hints(ServeConfig)
    return {
        f.name: section
        for f in dataclasses.fields(ServeConfig)
        if (section := _section_type(hints[f.name])) is not None
    }


def group_options() -> dict[str, list[str]]:
    """Every user-facing group and its options, as Hydra finds them (plugins' conf/ too)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vllm_hydra.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = [g for g in loader.list_groups("") if g not in INTERNAL_GROUPS]
        return {g: loader.get_group_options(g) for g in groups}


def _option_note(group: str, option: str) -> str:
    """The first sentence of conf/<group>/<option>.yaml's leading comment, if it has one."""
    path = Path(CONF_DIR) / group / f"{option}.yaml"
    if not path.is_file():
        return ""
    words = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#") or text.startswith("#   "):
            break
        if not text.startswith("# @package"):
            words.append(text.lstrip("#").strip())
    note = " ".join(words)
    return note.split(". ")[0].rstrip(".") + "." if note else ""


def groups_help(options: dict[str, list[str]]) -> str:
    order = [g for g in options if g not in OVERLAY_GROUPS] + [
        g for g in OVERLAY_GROUPS if g in options
    ]
    out = ["Config groups (group=option; the default first):"]
    defaults = _default_choices()
    for group in order:
        chosen = defaults.get(group)
        names = sorted(options[group], key=lambda o: (o != chosen, o))
        if group == "local":
            continue
        out.append(f"  {group}: {', '.join(names)}")
        for option in names:
            note = _option_note(group, option)
            if note:
                out.extend(
                    textwrap.wrap(
                        f"{option}: {note}", 96, initial_indent=" " * 6, subsequent_indent=" " * 8
                    )
                )
    local = ", ".join(options.get("local", [])) or "none yet"
    out.append(f"  local: your own gitignored settings, conf/local/<name>.yaml ({local})")
    return "\n".join(out)


def _default_choices() -> dict[str, str]:
    """group -> default option, from conf/serve.yaml's defaults list."""
    import yaml

    defaults = yaml.safe_load((Path(CONF_DIR) / "serve.yaml").read_text())["defaults"]
    choices = {}
    for entry in defaults:
        if isinstance(entry, dict):
            for key, value in entry.items():
                choices[key.replace("optional ", "")] = value
    return choices


def help_page(section: str | None = None) -> str:
    """The whole page, or one section's keys (KeyError naming the sections if no such one)."""
    known = sections()
    if section is not None:
        if section not in known:
            raise KeyError(f"No section '{section}'. Sections: {', '.join(known)}.")
        return section_help(section, known[section]) + "\n"
    parts = [USAGE, groups_help(group_options()), "", "Keys (section.key: type = default):"]
    parts += [section_help(name, cls) for name, cls in known.items()]
    parts.append(
        "dry_run: bool = false\n      Validate, print the plan and provenance, load nothing."
    )
    return "\n".join(parts) + "\n"
