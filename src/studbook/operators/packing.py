"""Packing: documents stay text until a generation tokenizes them with its own tokenizer.

A corpus split, a lineage's hard examples and replayed items are all text; the breed stage
turns each into one id stream with the generation's tokenizer (byte-level, BPE, Unigram …),
every document preceded by the tokenizer's end-of-text token, and counts the UTF-8 bytes
it packed so training can report bits per *byte* (comparable across tokenizers) rather
than nats per token.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studbook.core.errors import StudbookError


@dataclass(frozen=True)
class Stream:
    """Token ids of packed documents, and how many UTF-8 bytes of text they encode."""

    ids: np.ndarray
    documents: int
    text_bytes: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def bytes_per_token(self) -> float:
        """Text bytes per token, end-of-text tokens included (they carry no text)."""
        return self.text_bytes / len(self.ids) if len(self.ids) else 0.0


def end_of_text(tokenizer, file: str | None = None, key: str = "tokenizer") -> int:
    """The id that separates packed documents; a tokenizer without one is refused."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise StudbookError("the tokenizer has no end-of-text token (eos_token), so documents "
                            "cannot be packed; set eos_token in its tokenizer_config.json",
                            file=file, key=key)
    return int(eos)


@contextmanager
def _parallel_tokenizers():
    """`tokenizers` parallelises a batch over the cores only when TOKENIZERS_PARALLELISM
    allows it; studbook turns it off process-wide (it warns after a fork), and on just
    for the batch encode here (3x faster on two cores)."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids, no special tokens added (the packing adds end-of-text itself)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "_tokenizer", None)  # a fast tokenizer's Rust core
    with _parallel_tokenizers():
        if backend is not None:
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        return tokenizer(texts, add_special_tokens=False)["input_ids"]


def pack(texts: list[str], tokenizer, file: str | None = None) -> Stream:
    """Documents as one stream: [eos, doc0…, eos, doc1…, …]."""
    eos = end_of_text(tokenizer, file)
    parts: list[np.ndarray] = []
    for ids in encode_texts(tokenizer, texts):
        parts.append(np.asarray([eos, *ids], dtype=np.int64))
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    # int32 holds every vocabulary in use (Qwen's 151 k ids too) at half int64's memory
    return Stream(ids=ids.astype(np.int32), documents=len(texts),
                  text_bytes=sum(len(t.encode("utf-8")) for t in texts))


def corpus_texts(corpus_dir: str | Path, split: str, niches: list[str] | None) -> list[str]:
    from studbook.evidence.data import read_split

    return [record["text"] for record in read_split(corpus_dir, split)
            if niches is None or record["niche"] in niches]


def corpus_stream(corpus_dir: str | Path, split: str, niches: list[str] | None, tokenizer,
                  file: str | None = None) -> Stream:
    """A corpus split (restricted to `niches`) packed with `tokenizer`."""
    texts = corpus_texts(corpus_dir, split, niches)
    if not texts:
        raise StudbookError(f"no training text in split '{split}' of {corpus_dir} for niches "
                            f"{niches}", file=file, key="niches")
    return pack(texts, tokenizer, file)
