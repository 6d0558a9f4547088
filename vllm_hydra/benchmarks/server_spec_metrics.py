"""Speculative decoding's acceptance in serve mode, read from the server's Prometheus counters
(the engine runs in another process there, so its scheduler is out of reach)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from vllm_hydra.spec_decode.metrics import SpecDecodingStats

COUNTERS = {
    "vllm:spec_decode_num_drafts": "num_drafts",
    "vllm:spec_decode_num_draft_tokens": "num_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens": "num_accepted_tokens",
}


def scrape_spec_counters(url: str) -> dict[str, float]:
    """The spec-decode counters of GET {url}/metrics, summed over engines ({} when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in COUNTERS:
            samples = [s for s in family.samples if s.name.endswith("_total")]
            totals[COUNTERS[family.name]] = sum(s.value for s in samples)
    return totals


def spec_decode_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Acceptance rate and mean acceptance length between two scrapes ({} without drafts)."""
    if not after:
        return {}
    delta = {name: int(after[name] - before.get(name, 0.0)) for name in after}
    stats = SpecDecodingStats(
        num_drafts=delta.get("num_drafts", 0),
        num_draft_tokens=delta.get("num_draft_tokens", 0),
        num_accepted_tokens=delta.get("num_accepted_tokens", 0),
    )
    return {
        "spec_acceptance_rate": stats.acceptance_rate,
        "spec_mean_acceptance_length": stats.mean_acceptance_length,
        "spec_num_drafts": float(stats.num_drafts),
    }
