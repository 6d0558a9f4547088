"""`serve.py --help`: the project's own page, with groups, options, keys, defaults, meanings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vllm_hydra.config.cache import CacheConfig
from vllm_hydra.config.help import field_docs, help_page

REPO = Path(__file__).resolve().parents[2]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "serve.py", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_help_page() -> None:
    page = help_page()  # what serve.py --help prints (a case of tests/test_serve_misconfig.py)
    assert page.startswith("usage: python serve.py")
    assert "python serve.py dry_run=true model=llama3 device=cuda" in page  # examples
    groups = page.split("Config groups")[1].split("Keys (")[0]
    assert "  model: tiny, bench-125m, llama3" in groups  # the default first
    assert "  profile: cpu-dev, h100-llama3-8b, h100x4-llama3-70b" in groups
    assert "cpu-dev: A CPU laptop or CI box" in groups
    for internal in ("schema:", "bench:", "hparams_search:", "hydra:"):
        assert internal not in groups
    assert "  cache.kv_cache_memory_gib: size = null" in page
    assert "Takes a number in GiB or a size with its unit" in page  # the schema's comment
    assert "  parallel.tp: int = 1\n      Tensor-parallel ranks" in page
    assert "  model.dtype: {auto, float32, bfloat16, float16} = auto" in page
    assert "Hydra is" not in page and "powered by Hydra" not in page


def test_one_section_and_an_unknown_one() -> None:
    result = serve("--help", "scheduler")
    assert result.returncode == 0 and result.stdout.startswith("scheduler  (SchedulerConfig)")
    assert "model." not in result.stdout
    result = serve("--help", "nosuch")
    assert result.returncode == 1 and "No section 'nosuch'. Sections: model," in result.stderr


def test_field_docs_read_the_schema_comments() -> None:
    docs = field_docs(CacheConfig)
    assert (
        docs["num_blocks_override"]
        == "Use exactly this many KV blocks instead of sizing from memory."
    )
    assert docs["memory_utilization"].startswith("Fraction of each GPU's memory")
