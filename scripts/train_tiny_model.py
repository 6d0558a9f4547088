"""Train the tiny Llama model that ships with vllm_hydra as its default model.

The training corpus is built only from local Debian packages, so the run needs no network:

* ``fortunes``: the plain fortune files in ``/usr/share/games/fortunes/`` (``.dat`` index
  files, ``.u8`` links, ``ascii-art`` and any offensive collection are skipped);
* ``bible-kjv``: the King James Bible, decoded with ``bible -p /usr/lib "Gen1:1-Rev22:21"``.

The script trains a byte-level BPE tokenizer (vocabulary 4096) with pad/bos/eos and chat-role
special tokens, then a ~4M-parameter ``LlamaForCausalLM`` (4 layers, hidden 256, GQA 4/2
heads, tied embeddings) on packed 256-token sequences, mixed with chat-formatted samples so the
chat endpoint answers in English. It saves everything in bfloat16 into
``vllm_hydra/assets/tiny-llama/`` with a README recording the run, and writes the English word
list used by ``tests/assets/test_tiny_model.py``.

Usage (from the repository root)::

    apt-get install -y fortunes bible-kjv
    .venv/bin/python scripts/train_tiny_model.py --max-minutes 25
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FORTUNES_DIR = Path("/usr/share/games/fortunes")
BIBLE_DATA_DIR = Path("/usr/lib")
BIBLE_RANGE = "Gen1:1-Rev22:21"
SKIPPED_FORTUNE_FILES = {"ascii-art"}
INSTALL_HINT = "Install the corpus with: apt-get install -y fortunes bible-kjv"

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
VOCAB_SIZE = 4096
SAMPLE_PROMPT = "Once upon a time"
SAMPLE_NEW_TOKENS = 24

# Each message is rendered as "<|role|>\n{content}\n"; an assistant turn ends with <|eos|>
# right after its content instead, so a generated answer stops cleanly at eos. The template
# starts with bos, so a rendered chat is encoded with add_special_tokens=False.
CHAT_TEMPLATE = r"""{{- bos_token }}
{%- for message in messages %}
    {{- '<|' + message['role'] + '|>\n' + message['content'] }}
    {%- if message['role'] == 'assistant' %}
        {{- eos_token + '\n' }}
    {%- else %}
        {{- '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|assistant|>\n' }}
{%- endif %}"""

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a wise old storyteller.",
    "You answer with quotes and verses.",
]
FORTUNE_REQUESTS = [
    "Tell me a fortune.",
    "Give me a fortune cookie.",
    "Say something wise.",
    "Tell me a joke.",
    "Share a quote with me.",
    "Tell me something funny.",
    "What is your advice for today?",
    "Tell me something interesting.",
    "Can you cheer me up?",
    "Say something clever.",
]
VERSE_REQUESTS = [
    "Give me a verse from the Bible.",
    "Share a Bible verse.",
    "Tell me a proverb.",
    "What does the Bible say?",
    "Read me a verse.",
    "Quote a verse from {book}.",
    "Tell me something from the book of {book}.",
]
SMALL_TALK = [
    ("Hello!", "Hello! Ask me for a fortune, a proverb or a verse."),
    ("Hi.", "Hi there. Would you like to hear a fortune or a verse?"),
    ("Who are you?", "I am a tiny language model that knows fortunes and verses."),
    ("What can you do?", "I can tell you a fortune, a proverb, a joke or a verse."),
    ("Thank you.", "You are welcome."),
    ("Goodbye.", "Goodbye, and may good fortune follow you."),
]


@dataclass
class Verse:
    """One Bible verse with its reference."""

    book: str
    chapter: int
    number: int
    text: str


@dataclass
class Corpus:
    """Plain-text training documents plus the pieces used to build chat samples."""

    documents: list[str]
    fortunes: list[str]
    verses: list[Verse]
    sources: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What the training loop reports back."""

    steps: int
    tokens_seen: int
    final_loss: float
    wall_seconds: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", type=Path, default=REPO_ROOT / "vllm_hydra/assets/tiny-llama"
    )
    parser.add_argument(
        "--words-out", type=Path, default=REPO_ROOT / "tests/data/english_words.txt"
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--chat-samples", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=24.0)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def fortune_files() -> list[Path]:
    """The plain fortune files, without indexes, links and non-prose collections."""
    if not FORTUNES_DIR.is_dir():
        sys.exit(f"{FORTUNES_DIR} not found. {INSTALL_HINT}")
    files = [
        path
        for path in sorted(FORTUNES_DIR.iterdir())
        if path.is_file()
        and not path.is_symlink()
        and path.suffix not in {".dat", ".u8"}
        and path.name not in SKIPPED_FORTUNE_FILES
    ]
    if not files:
        sys.exit(f"No fortune files in {FORTUNES_DIR}. {INSTALL_HINT}")
    return files


def read_fortunes(files: list[Path]) -> list[str]:
    """Split the fortune files on their '%' separator lines."""
    fortunes: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        fortunes.extend(part.strip("\n") for part in re.split(r"^%\n", text, flags=re.M))
    return [fortune for fortune in fortunes if fortune.strip()]


def decode_bible() -> str:
    """Decode the KJV text from the bible-kjv data file, one verse per line."""
    if shutil.which("bible") is None or not (BIBLE_DATA_DIR / "bible.data").exists():
        sys.exit(f"The `bible` program or its data is missing. {INSTALL_HINT}")
    command = ["bible", "-p", str(BIBLE_DATA_DIR), "-l10000", BIBLE_RANGE]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return result.stdout


def parse_bible(text: str) -> list[Verse]:
    """Turn `bible` output ("Genesis 1" headings, "  1 text" verses) into verses."""
    verses: list[Verse] = []
    book, chapter = "", 0
    for line in text.splitlines():
        if heading := re.fullmatch(r"(\S.*) (\d+)", line):
            book, chapter = heading.group(1), int(heading.group(2))
        elif verse := re.fullmatch(r"\s+(\d+) (.+)", line):
            verses.append(Verse(book, chapter, int(verse.group(1)), verse.group(2).strip()))
    return verses


def bible_chapters(verses: list[Verse]) -> list[str]:
    """One document per chapter: a heading line and then the verses, one per line."""
    chapters: dict[tuple[str, int], list[str]] = {}
    for verse in verses:
        chapters.setdefault((verse.book, verse.chapter), []).append(verse.text)
    return [f"{book} {number}\n\n" + "\n".join(lines) for (book, number), lines in chapters.items()]


def build_corpus() -> Corpus:
    files = fortune_files()
    fortunes = read_fortunes(files)
    bible_text = decode_bible()
    verses = parse_bible(bible_text)
    if len(verses) < 30000:
        sys.exit(f"Only {len(verses)} verses decoded from the KJV. {INSTALL_HINT}")
    sources = {f"fortunes/{path.name}": path.stat().st_size for path in files}
    sources["bible-kjv (decoded)"] = len(bible_text.encode())
    return Corpus(fortunes + bible_chapters(verses), fortunes, verses, sources)


def write_word_list(documents: list[str], path: Path, min_count: int = 3) -> int:
    """Write the lowercase alphabetic words occurring at least `min_count` times."""
    counts = collections.Counter(
        word for doc in documents for word in re.findall(r"[a-z]+", doc.lower())
    )
    words = sorted(word for word, count in counts.items() if count >= min_count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return len(words)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def train_tokenizer(documents: list[str]) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    assert [tokenizer.token_to_id(token) for token in (PAD, BOS, EOS)] == [0, 1, 2]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


# ---------------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------------


def verse_answer(verses: list[Verse], rng: random.Random) -> tuple[str, str]:
    """A run of 1-3 consecutive verses with its reference, and the book it came from."""
    start = rng.randrange(len(verses) - 3)
    run = [verses[start]]
    for verse in verses[start + 1 : start + rng.randint(1, 3)]:
        if (verse.book, verse.chapter) == (run[0].book, run[0].chapter):
            run.append(verse)
    first, last = run[0], run[-1]
    numbers = f"{first.number}" if first is last else f"{first.number}-{last.number}"
    text = " ".join(verse.text for verse in run)
    return f"{text} ({first.book} {first.chapter}:{numbers})", first.book


def chat_turn(corpus: Corpus, short_fortunes: list[str], rng: random.Random) -> list[dict]:
    """One user request and the assistant's answer."""
    kind = rng.random()
    if kind < 0.05:
        question, answer = rng.choice(SMALL_TALK)
    elif kind < 0.55:
        question, answer = rng.choice(FORTUNE_REQUESTS), rng.choice(short_fortunes)
    else:
        answer, book = verse_answer(corpus.verses, rng)
        question = rng.choice(VERSE_REQUESTS).format(book=book)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def chat_conversation(corpus: Corpus, short_fortunes: list[str], rng: random.Random) -> list:
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for _ in range(2 if rng.random() < 0.2 else 1):
        messages.extend(chat_turn(corpus, short_fortunes, rng))
    return messages


def tokenize_documents(
    tokenizer: PreTrainedTokenizerFast, corpus: Corpus, chat_samples: int, seed: int
) -> list[list[int]]:
    """Token ids per document: bos + text + eos, and chat samples rendered by the template."""
    backend = tokenizer.backend_tokenizer
    encoded = backend.encode_batch(corpus.documents, add_special_tokens=False)
    sequences = [[BOS_ID, *encoding.ids, EOS_ID] for encoding in encoded]
    rng = random.Random(seed)
    short_fortunes = [fortune for fortune in corpus.fortunes if len(fortune) <= 400]
    chats = [chat_conversation(corpus, short_fortunes, rng) for _ in range(chat_samples)]
    rendered = tokenizer.apply_chat_template(chats, tokenize=False)
    sequences += [e.ids for e in backend.encode_batch(rendered, add_special_tokens=False)]
    return sequences


class PackedBatches:
    """Endless batches of `seq_len` tokens packed from reshuffled documents, epoch by epoch."""

    def __init__(self, sequences: list[list[int]], seq_len: int, batch_size: int, seed: int):
        self.sequences = [np.asarray(ids, dtype=np.int64) for ids in sequences]
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.blocks = np.empty((0, seq_len), dtype=np.int64)
        self.cursor = 0
        self.epochs = 0

    def _new_epoch(self) -> None:
        order = self.rng.permutation(len(self.sequences))
        stream = np.concatenate([self.sequences[index] for index in order])
        blocks = stream[: len(stream) // self.seq_len * self.seq_len].reshape(-1, self.seq_len)
        self.blocks = blocks[self.rng.permutation(len(blocks))]
        self.cursor = 0
        self.epochs += 1

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch_size > len(self.blocks):
            self._new_epoch()
        batch = self.blocks[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return torch.from_numpy(batch)


# ---------------------------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------------------------


def build_model() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return LlamaForCausalLM(config)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(
    model: LlamaForCausalLM, optimizer: torch.optim.Optimizer, batch: torch.Tensor
) -> float:
    """One optimizer step on a packed batch; returns the loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=batch, labels=batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def fit_steps_to_budget(args: argparse.Namespace, step: int, elapsed: float, total: int) -> int:
    """Shrink the schedule once, early, so the cosine decay ends inside the time budget."""
    affordable = int(args.max_minutes * 60 / (elapsed / step) * 0.97)
    if affordable < total:
        print(f"[budget] {elapsed / step:.2f} s/step: shrinking schedule {total} -> {affordable}")
        return max(affordable, step + 1)
    return total


def train(model: LlamaForCausalLM, batches: PackedBatches, args: argparse.Namespace) -> TrainResult:
    """AdamW with warmup + cosine; stops early when `args.max_minutes` is spent."""
    optimizer = make_optimizer(model, args.lr)
    total, recent = args.steps, collections.deque(maxlen=args.log_every * 2)
    start, step = time.monotonic(), 0
    model.train()
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, args.lr, args.warmup_steps)
        recent.append(train_step(model, optimizer, batches.next()))
        step += 1
        elapsed = time.monotonic() - start
        if step == 20:
            total = fit_steps_to_budget(args, step, elapsed, total)
        if step % args.log_every == 0 or step == total:
            tokens = step * args.batch_size * args.seq_len
            print(
                f"step {step:5d}/{total} loss {np.mean(recent):.4f} "
                f"lr {optimizer.param_groups[0]['lr']:.2e} tokens {tokens:,} "
                f"epoch {batches.epochs} {elapsed / 60:.1f} min",
                flush=True,
            )
        if elapsed > args.max_minutes * 60:
            print(f"[budget] {args.max_minutes} min reached at step {step}; stopping early")
            break
    tokens_seen = step * args.batch_size * args.seq_len
    final_loss = float(np.mean(list(recent)[-args.log_every :]))
    return TrainResult(step, tokens_seen, final_loss, time.monotonic() - start)


# ---------------------------------------------------------------------------------------------
# Saving and reporting
# ---------------------------------------------------------------------------------------------


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file():
            stale.unlink()
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def greedy_sample(model_dir: Path, prompt: str = SAMPLE_PROMPT) -> str:
    """Reload the saved model exactly as a user would and continue `prompt` greedily."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=SAMPLE_NEW_TOKENS, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)


def chat_sample(model_dir: Path) -> str:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = [{"role": "user", "content": "Tell me a fortune."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    input_ids = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, max_new_tokens=48, do_sample=False)
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)


def write_readme(out: Path, report: dict) -> None:
    source_rows = "\n".join(f"| `{name}` | {size:,} |" for name, size in report["sources"].items())
    file_rows = "\n".join(
        f"| `{path.name}` | {path.stat().st_size:,} |"
        for path in sorted(out.iterdir())
        if path.name != "README.md"
    )
    text = README_TEMPLATE.format(source_rows=source_rows, file_rows=file_rows, **report)
    (out / "README.md").write_text(text, encoding="utf-8")


README_TEMPLATE = """\
# tiny-llama: the embedded default model

A ~{params_m:.1f}M-parameter Llama trained from scratch on a CPU by
`scripts/train_tiny_model.py`, so vllm_hydra can serve a real (if very small) model with no
download. It writes English-looking text in the style of fortune cookies and the King James
Bible; it is a test fixture, not a useful assistant.

## Corpus

Debian packages `fortunes` (with its dependency `fortunes-min`) and `bible-kjv` (with
`bible-kjv-text`). Fortune files in `/usr/share/games/fortunes/` are split on `%` lines (`.dat`
indexes, `.u8` links and `ascii-art` skipped); the KJV is decoded with
`bible -p /usr/lib -l10000 "{bible_range}"` and split into one document per chapter, verse
numbers removed.
{documents:,} documents, {corpus_bytes:,} bytes in total, plus {chat_samples:,} generated chat
samples (a user asks for a fortune, proverb or verse; the assistant answers with one).

| source | bytes |
|---|---|
{source_rows}

## Tokenizer

Byte-level BPE (`tokenizers`, ByteLevel pre-tokenizer and decoder, full byte alphabet),
vocabulary {vocab_size}. Special tokens: `<|pad|>` = 0, `<|bos|>` = 1, `<|eos|>` = 2,
`<|system|>` = 3, `<|user|>` = 4, `<|assistant|>` = 5. Encoding prepends `<|bos|>`.
Chat template (`chat_template.jinja`): `<|bos|>`, then each message (any role) as
`<|role|>\\n{{content}}\\n`, except that an assistant turn ends `{{content}}<|eos|>\\n`;
`add_generation_prompt` appends `<|assistant|>\\n`. The template already contains `<|bos|>`,
so encode a rendered chat with `add_special_tokens=False`.

## Architecture

`LlamaForCausalLM`: vocab {vocab_size}, hidden 256, intermediate 768 (SwiGLU), 4 layers,
4 attention heads of dim 64, 2 KV heads (GQA), RoPE theta 10000, RMSNorm eps 1e-5,
max positions 2048, tied input/output embeddings, bos 1 / eos 2 / pad 0.
**{params:,} parameters**, stored in bfloat16.

## Training

AdamW (betas 0.9/0.95, weight decay 0.1, peak lr {lr}, {warmup_steps} warmup steps then cosine
to 10%), gradient clipping 1.0, bf16 autocast on CPU with {threads} threads, batches of
{batch_size} x {seq_len} tokens packed from documents (each `<|bos|>` ... `<|eos|>`), seed {seed}.

- steps: {steps:,}
- tokens seen: {tokens_seen:,} (about {epochs:.1f} passes over {dataset_tokens:,} tokens)
- final training loss (mean of the last {log_every} steps): {final_loss:.3f}
- wall time of the training loop: {wall_minutes:.1f} min ({cpu})

Command:

```
{command}
```

## Samples (greedy, from the saved bfloat16 files)

`"{prompt}"`, up to {new_tokens} new tokens (generation stops at `<|eos|>`):

```
{prompt}{sample}
```

Chat, user "Tell me a fortune." (up to 48 new tokens):

```
{chat}
```

## Files

| file | bytes |
|---|---|
{file_rows}
"""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    corpus = build_corpus()
    corpus_bytes = sum(len(doc.encode()) for doc in corpus.documents)
    print(f"corpus: {len(corpus.documents):,} documents, {corpus_bytes:,} bytes", flush=True)
    words = write_word_list(corpus.documents, args.words_out)
    print(f"word list: {words:,} words -> {args.words_out}", flush=True)

    tokenizer = train_tokenizer(corpus.documents)
    sequences = tokenize_documents(tokenizer, corpus, args.chat_samples, args.seed)
    dataset_tokens = sum(len(seq) for seq in sequences)
    print(f"dataset: {len(sequences):,} sequences, {dataset_tokens:,} tokens", flush=True)

    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params:,} parameters", flush=True)
    batches = PackedBatches(sequences, args.seq_len, args.batch_size, args.seed)
    result = train(model, batches, args)

    save_model(model, tokenizer, args.output_dir)
    sample, chat = greedy_sample(args.output_dir), chat_sample(args.output_dir)
    print(f"sample: {SAMPLE_PROMPT!r} -> {sample!r}\nchat: {chat!r}", flush=True)
    report = {
        "params": params,
        "params_m": params / 1e6,
        "bible_range": BIBLE_RANGE,
        "documents": len(corpus.documents),
        "corpus_bytes": corpus_bytes,
        "chat_samples": args.chat_samples,
        "sources": corpus.sources,
        "vocab_size": VOCAB_SIZE,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "seed": args.seed,
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "epochs": result.tokens_seen / dataset_tokens,
        "dataset_tokens": dataset_tokens,
        "log_every": args.log_every,
        "final_loss": result.final_loss,
        "wall_minutes": result.wall_seconds / 60,
        "cpu": cpu_name(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "prompt": SAMPLE_PROMPT,
        "new_tokens": SAMPLE_NEW_TOKENS,
        "sample": sample,
        "chat": chat,
    }
    write_readme(args.output_dir, report)
    print(json.dumps({k: v for k, v in report.items() if k != "sources"}, indent=1, default=str))


if __name__ == "__main__":
    main()
