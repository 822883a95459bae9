"""The byte-level tokenizer every scratch-bred model carries, in plain HF format.

Byte b has id b + 3 (ids 0-2 are pad, end-of-text, unknown), the ByT5 convention, so
bits per byte is the natural metric. It is a `tokenizers` BPE with no merges over the
256 byte symbols: `AutoTokenizer.from_pretrained(models/NAME)` loads it with no
studbook import, and unlike ByT5Tokenizer it appends nothing to encoded text (lm-eval
splits context from continuation by token count, so an appended EOS would skew it).
Scratch founders carry it; imported models carry their own (BPE, Unigram, …), and every
operator trains and evaluates with the generation's own tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"
SPECIALS = (PAD, EOS, UNK)
OFFSET = len(SPECIALS)  # id of byte 0
EOS_ID = SPECIALS.index(EOS)
VOCAB_SIZE = 256 + OFFSET


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (what ByteLevel expects)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def build_tokenizer(model_max_length: int):
    """A fresh byte-level `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {special: i for i, special in enumerate(SPECIALS)}
    for byte, char in _bytes_to_unicode().items():
        vocab[char] = byte + OFFSET
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, bos_token=EOS, unk_token=UNK,
        model_max_length=model_max_length,
    )


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what the tokenizer *does*: its vocabulary and special tokens.

    Independent of file formatting and library version, so two models share a
    fingerprint exactly when they tokenize identically.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    specials = {k: getattr(tokenizer, k, None) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    payload = json.dumps({"vocab": vocab, "specials": specials}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
