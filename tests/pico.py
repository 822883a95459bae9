"""A team's own model, in miniature: pico models of real architectures with subword
tokenizers trained locally with the `tokenizers` library (nothing downloaded).

`team_model(folder, arch, tokenizer_kind)` writes what `save_pretrained` writes for a
model a team already runs — config, safetensors weights, tokenizer files — so studbook
imports it exactly as it would import a Qwen2, Mistral, GPT-NeoX or Phi-3 checkpoint.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

# hidden 32, two layers, grouped-query attention where the family has it
ARCHITECTURES = {
    "qwen2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "mistral": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                "sliding_window": None},
    "gpt_neox": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "rotary_pct": 0.5},
    "phi3": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0},
}
EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<unk>"


def stdlib_sample(files: int = 60) -> list[str]:
    """Some Python source to train a tokenizer on (what a team's code looks like here)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.glob("*.py"))[:files]:
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


def train_tokenizer(kind: str, texts: list[str], vocab_size: int = 400, max_length: int = 128):
    """A BPE (byte-level, as GPT-2/Qwen/NeoX) or Unigram (Metaspace, as Llama/Mistral's
    SentencePiece) tokenizer trained on `texts`, as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS, PAD, UNK]
    if kind == "bpe":
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    elif kind == "unigram":
        core = Tokenizer(models.Unigram())
        core.pre_tokenizer = pre_tokenizers.Metaspace()
        core.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                          unk_token=UNK, show_progress=False)
    else:
        raise ValueError(kind)
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, model_max_length=max_length)


def team_model(folder: Path, arch: str, tokenizer_kind: str, seed: int = 0,
               context_length: int = 128, **config_overrides) -> Path:
    """A randomly initialised pico model of `arch` with its own trained tokenizer, saved
    with `save_pretrained` (safetensors) into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    # Unigram's EM training is slower: fewer files keep it to about a second
    texts = stdlib_sample(60 if tokenizer_kind == "bpe" else 12)
    tokenizer = train_tokenizer(tokenizer_kind, texts, max_length=context_length)
    config = AutoConfig.for_model(arch, **{**ARCHITECTURES[arch], **config_overrides}, vocab_size=len(tokenizer),
                                  max_position_embeddings=context_length,
                                  bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **({} if "pad_token_id" in ARCHITECTURES[arch]
                                     else {"pad_token_id": tokenizer.pad_token_id}))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
