from transformers import AutoTokenizer

from studbook.operators.packing import pack
from studbook.operators.tokenizer import EOS_ID, VOCAB_SIZE, build_tokenizer, tokenizer_fingerprint

SAMPLE = "def f(x):\n    return x + 1  # ünïcode, tabs\t and 🐍\n"


def test_roundtrip_through_autotokenizer(tmp_path):
    build_tokenizer(512).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer(SAMPLE).input_ids
    assert ids == [b + 3 for b in SAMPLE.encode()]  # byte b -> id b + 3, nothing appended
    packed = pack([SAMPLE], tokenizer)  # training packs with the same tokenizer
    assert packed.ids.tolist() == [EOS_ID] + ids and packed.text_bytes == len(SAMPLE.encode())
    assert tokenizer.decode(ids) == SAMPLE
    assert len(tokenizer) == VOCAB_SIZE == 259
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == EOS_ID == 1
    assert tokenizer.model_max_length == 512


def test_fingerprint_is_functional(tmp_path):
    first = build_tokenizer(512)
    first.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer_fingerprint(first) == tokenizer_fingerprint(reloaded)
    assert tokenizer_fingerprint(build_tokenizer(128)) == tokenizer_fingerprint(first)
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(tmp_path, eos_token="<|pad|>")) \
        != tokenizer_fingerprint(first)
