"""Fine-tune the embedded tiny model so that it copies spans of its context (induction heads).

The model from ``scripts/train_tiny_model.py`` never saw a text repeat itself, so given a
sentence three times it does not write it a fourth time, and prompt lookup
(``speculative=ngram``) has little to gain from it. This script continues its training from the
saved checkpoint on a mix of

* the original corpus (fortunes, KJV chapters, chat samples), so it still writes English;
* text copies: a corpus passage, then its repetition (2-4 times, with or without a newline in
  between) or a quote of part of it;
* random-token copies: random ids repeated 2-6 times, as ``bench=repeat`` builds its prompts;
  the first occurrence carries no loss (nothing can predict random ids).

It trains in fp32 with ``transformers`` and torch AdamW on one thread, prints the loss on
held-out copy samples (the second repetition's tokens) and on held-out corpus text before and
after, and saves the result in bfloat16 over the checkpoint (same tokenizer, config, chat
template), with a README section recording the run.

Usage (from the repository root)::

    apt-get install -y fortunes bible-kjv
    .venv/bin/python scripts/finetune_tiny_copy.py --max-minutes 22
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from train_tiny_model import (
    BOS_ID,
    REPO_ROOT,
    PackedBatches,
    build_corpus,
    chat_sample,
    cpu_name,
    greedy_sample,
    learning_rate,
    make_optimizer,
    save_model,
    tokenize_documents,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

ASSET_DIR = REPO_ROOT / "vllm_hydra/assets/tiny-llama"
IGNORE = -100  # label of a position that carries no loss
FIRST_RANDOM_ID = 3  # as the bench's workloads: no pad, bos or eos in random spans
HELD_OUT_SEQUENCES = 256
EVAL_SAMPLES = 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
COPY_PROMPT = "In the beginning God created the heaven and the earth.\n"


@dataclass
class Row:
    """One training or evaluation sequence: input ids and labels (IGNORE where no loss)."""

    ids: list[int]
    labels: list[int]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ASSET_DIR)
    parser.add_argument("--output-dir", type=Path, default=ASSET_DIR)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--corpus-fraction", type=float, default=0.5)
    parser.add_argument("--random-copy-fraction", type=float, default=0.25)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--chat-samples", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=22.0)
    parser.add_argument("--log-every", type=int, default=25)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Copy samples
# ---------------------------------------------------------------------------------------------


def random_span(rng: random.Random, length: int, vocab_size: int) -> list[int]:
    return [rng.randrange(FIRST_RANDOM_ID, vocab_size) for _ in range(length)]


def text_passage(stream: np.ndarray, rng: random.Random, length: int) -> list[int]:
    """`length` consecutive corpus tokens from a random offset (special tokens dropped)."""
    start = rng.randrange(len(stream) - length)
    return [int(t) for t in stream[start : start + length] if t > 2] or [FIRST_RANDOM_ID]


def random_copy_segment(rng: random.Random, vocab_size: int) -> Row:
    """A random span repeated 2-6 times; its first occurrence carries no loss."""
    span = random_span(rng, rng.randint(4, 48), vocab_size)
    repeats = rng.randint(2, 6)
    return Row(span * repeats, [IGNORE] * len(span) + span * (repeats - 1))


def text_copy_segment(stream: np.ndarray, rng: random.Random, newline: list[int]) -> Row:
    """A passage, then its repetition (2-4 times) or a quote of part of it."""
    passage = text_passage(stream, rng, rng.randint(8, 96))
    separator = newline if rng.random() < 0.5 else []
    if rng.random() < 0.7:
        ids = (passage + separator) * rng.randint(2, 4)
    else:
        start = rng.randrange(len(passage))
        quote = passage[start : rng.randint(start + 1, len(passage))]
        filler = text_passage(stream, rng, rng.randint(0, 32) + 1)
        ids = passage + separator + filler + separator + quote
    return Row(ids, list(ids))


def fill_row(make_segment, seq_len: int, rng: random.Random) -> Row:
    """Segments from `make_segment` after an optional bos, cut to exactly `seq_len` tokens."""
    row = Row([BOS_ID], [IGNORE]) if rng.random() < 0.5 else Row([], [])
    while len(row.ids) < seq_len:
        segment = make_segment()
        row.ids += segment.ids
        row.labels += segment.labels
    return Row(row.ids[:seq_len], row.labels[:seq_len])


class MixedBatches:
    """Batches mixing packed corpus blocks, text copies and random-token copies."""

    def __init__(self, corpus: PackedBatches, stream: np.ndarray, args, vocab: int, newline):
        self.corpus, self.stream, self.args = corpus, stream, args
        self.vocab, self.newline = vocab, newline
        self.rng = random.Random(args.seed)
        self.num_corpus = round(args.batch_size * args.corpus_fraction)
        self.num_random = round(args.batch_size * args.random_copy_fraction)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        args, rng = self.args, self.rng
        corpus = self.corpus.next()[: self.num_corpus]
        rows = [
            fill_row(lambda: random_copy_segment(rng, self.vocab), args.seq_len, rng)
            for _ in range(self.num_random)
        ]
        rows += [
            fill_row(lambda: text_copy_segment(self.stream, rng, self.newline), args.seq_len, rng)
            for _ in range(args.batch_size - self.num_corpus - self.num_random)
        ]
        ids = torch.cat([corpus, torch.tensor([row.ids for row in rows])])
        labels = torch.cat([corpus, torch.tensor([row.labels for row in rows])])
        return ids, labels


# ---------------------------------------------------------------------------------------------
# Held-out evaluation
# ---------------------------------------------------------------------------------------------


def second_repetition_row(span: list[int], repeats: int) -> Row:
    """`span` repeated; loss only on the second repetition's tokens."""
    labels = [IGNORE] * len(span) + span + [IGNORE] * len(span) * (repeats - 2)
    return Row(span * repeats, labels)


def eval_sets(stream: np.ndarray, held_out: list[list[int]], vocab: int, seed: int) -> dict:
    """Fixed held-out samples: bench-like random copies, text copies, corpus text."""
    rng = random.Random(seed + 1000)
    random_copies = [
        second_repetition_row(random_span(rng, rng.randint(16, 32), vocab), 3)
        for _ in range(EVAL_SAMPLES)
    ]
    text_copies = [
        second_repetition_row(text_passage(stream, rng, rng.randint(16, 64)), 3)
        for _ in range(EVAL_SAMPLES)
    ]
    corpus = [Row(seq[:256], seq[:256]) for seq in held_out]
    return {"random_copy": random_copies, "text_copy": text_copies, "corpus": corpus}


@torch.no_grad()
def evaluate_rows(model, rows: list[Row]) -> tuple[float, float]:
    """Mean loss and greedy (argmax) accuracy over the labelled next-token positions."""
    total_loss, total_correct, total = 0.0, 0, 0
    for row in rows:
        ids, labels = torch.tensor([row.ids]), torch.tensor(row.labels[1:])
        logits = model(input_ids=ids).logits[0, :-1].float()
        mask = labels != IGNORE
        losses = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
        total_loss += losses.item()
        total_correct += int((logits[mask].argmax(-1) == labels[mask]).sum())
        total += int(mask.sum())
    return total_loss / total, total_correct / total


def evaluate(model, sets: dict) -> dict[str, float]:
    model.eval()
    report = {}
    for name, rows in sets.items():
        report[f"{name}_loss"], report[f"{name}_accuracy"] = evaluate_rows(model, rows)
    model.train()
    return report


def print_eval(label: str, report: dict[str, float]) -> None:
    print(f"[eval {label}] " + " ".join(f"{k} {v:.4f}" for k, v in report.items()), flush=True)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train_step(model, optimizer: torch.optim.Optimizer, ids: torch.Tensor, labels) -> float:
    """One fp32 AdamW step; returns the loss."""
    loss = model(input_ids=ids, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def fit_to_budget(args: argparse.Namespace, step: int, elapsed: float, total: int) -> int:
    """Shrink the schedule once, early, so the cosine decay ends inside the time budget."""
    affordable = int(args.max_minutes * 60 / (elapsed / step) * 0.95)
    if affordable < total:
        print(f"[budget] {elapsed / step:.2f} s/step: shrinking schedule {total} -> {affordable}")
        return max(affordable, step + 1)
    return total


def train(model, batches: MixedBatches, args: argparse.Namespace) -> dict:
    optimizer = make_optimizer(model, args.lr)
    total, recent = args.steps, collections.deque(maxlen=args.log_every)
    start, step = time.monotonic(), 0
    model.train()
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, args.lr, args.warmup_steps)
        recent.append(train_step(model, optimizer, *batches.next()))
        step += 1
        elapsed = time.monotonic() - start
        if step == 10:
            total = fit_to_budget(args, step, elapsed, total)
        if step % args.log_every == 0 or step == total:
            print(f"step {step:5d}/{total} loss {np.mean(recent):.4f} {elapsed / 60:.1f} min")
            sys.stdout.flush()
    wall = time.monotonic() - start
    return {"steps": step, "tokens_seen": step * args.batch_size * args.seq_len, "wall": wall}


# ---------------------------------------------------------------------------------------------
# Data, saving, reporting
# ---------------------------------------------------------------------------------------------


def split_sequences(tokenizer, args) -> tuple[list[list[int]], list[list[int]]]:
    """The original corpus tokenized with the checkpoint's tokenizer, minus a held-out part."""
    sequences = tokenize_documents(tokenizer, build_corpus(), args.chat_samples, args.seed)
    random.Random(args.seed).shuffle(sequences)
    return sequences[HELD_OUT_SEQUENCES:], sequences[:HELD_OUT_SEQUENCES]


def copy_sample(model_dir: Path) -> str:
    """Greedy continuation of a sentence given three times: a copying model writes it again."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer(COPY_PROMPT * 3, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def write_readme(out: Path, readme: str, report: dict) -> None:
    """The checkpoint's README, its copy section replaced by one recording this run."""
    base = readme.split(README_SECTION)[0].rstrip("\n")
    rows = "\n".join(
        f"| {name} | {report['before'][name]:.3f} | {report['after_fp32'][name]:.3f} "
        f"| {report['after_bf16'][name]:.3f} |"
        for name in report["before"]
    )
    section = README_SECTION_TEMPLATE.format(
        rows=rows,
        held_out=HELD_OUT_SEQUENCES,
        minutes=report["train"]["wall"] / 60,
        **report["train"],
        **report,
    )
    (out / "README.md").write_text(f"{base}\n\n{section}", encoding="utf-8")


README_SECTION = "## Copy fine-tuning"
README_SECTION_TEMPLATE = (
    README_SECTION
    + """ (`scripts/finetune_tiny_copy.py`)

The model above continued its training so that it copies spans of its context, as real LLMs
do (induction heads), which is what prompt lookup (`speculative=ngram`) needs. Each batch
of {args[batch_size]} x {args[seq_len]} tokens mixed packed corpus blocks (fraction \
{args[corpus_fraction]}), random-token copies (fraction {args[random_copy_fraction]}: random \
ids repeated 2-6 times, no loss on the first occurrence) and text copies (the rest: a corpus
passage repeated 2-4 times, or followed by a quote of part of it). fp32, AdamW as above with
peak lr {args[lr]}, {args[warmup_steps]} warmup steps then cosine to 10%, one torch thread, \
seed {args[seed]}; {steps:,} steps, {tokens_seen:,} tokens, {minutes:.1f} min ({cpu}). The
held-out corpus sequences ({held_out} of them, first 256 tokens each) were left out of this
fine-tuning but were part of the original training.

Held-out losses (nats per token) and greedy next-token accuracy. `random_copy`: 64 prompts
of a random span of 16-32 ids repeated 3 times, scored on the second repetition's tokens;
`text_copy`: the same with corpus passages of 16-64 tokens:

| metric | before | after (fp32) | after (saved bf16) |
|---|---|---|---|
{rows}

Greedy continuation of `"In the beginning God created the heaven and the earth.\\n"` given
three times (24 new tokens), before:

```
{samples[copy_before]}
```

after:

```
{samples[copy]}
```

`"Once upon a time"` after (the samples above are from before this fine-tuning):

```
Once upon a time{samples[sample]}
```

Chat, user "Tell me a fortune.", after:

```
{samples[chat]}
```

Command:

```
{command}
```
"""
)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the other core is someone else's
    torch.manual_seed(args.seed)
    tokenizer: PreTrainedTokenizerFast = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    train_seqs, held_out = split_sequences(tokenizer, args)
    stream = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_seqs])
    vocab = model.config.vocab_size
    sets = eval_sets(stream, held_out, vocab, args.seed)
    before = evaluate(model, sets)
    copy_sample_before = copy_sample(args.checkpoint)
    print_eval("before", before)

    corpus = PackedBatches(train_seqs, args.seq_len, args.batch_size, args.seed)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    result = train(model, MixedBatches(corpus, stream, args, vocab, newline), args)
    after_fp32 = evaluate(model, sets)
    print_eval("after (fp32)", after_fp32)

    readme = (args.checkpoint / "README.md").read_text(encoding="utf-8")
    tokenizer_files = {name: (args.checkpoint / name).read_bytes() for name in TOKENIZER_FILES}
    save_model(model, tokenizer, args.output_dir)
    for name, data in tokenizer_files.items():  # byte for byte: the tokenizer did not change
        (args.output_dir / name).write_bytes(data)
    saved = AutoModelForCausalLM.from_pretrained(args.output_dir, dtype=torch.bfloat16)
    after = evaluate(saved, sets)
    print_eval("after (saved bf16)", after)
    samples = {
        "sample": greedy_sample(args.output_dir),
        "chat": chat_sample(args.output_dir),
        "copy": copy_sample(args.output_dir),
        "copy_before": copy_sample_before,
    }
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "train": result,
        "before": before,
        "after_fp32": after_fp32,
        "after_bf16": after,
        "samples": samples,
        "cpu": cpu_name(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    write_readme(args.output_dir, readme, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
