"""The file-free hashed-word tokenizer."""

import pytest
import torch

from vla.config import deep_fusion_preset
from vla.pretrained import build_language_model, load_tokenizer
from vla.tokenizer import SPECIAL_TOKENS, HashedWordTokenizer, make_file_free_tokenizer


def test_one_token_per_word_case_insensitive_and_stable():
    tokenizer = HashedWordTokenizer()
    ids = tokenizer("<image> Touch the BLUE ball.")["input_ids"]
    image = tokenizer.convert_tokens_to_ids("<image>")
    assert ids[:2] == [tokenizer.bos_token_id, image]
    words = ids[2:]
    assert len(words) == 5  # touch, the, blue, ball, "."
    assert words == tokenizer("touch the blue ball .", add_special_tokens=False)["input_ids"]
    # Fixed values: the hash must not depend on the process (Python's hash() is salted).
    assert words == [1722, 2654, 3474, 78, 3568]


def test_distinct_words_of_the_task_get_distinct_ids():
    tokenizer = HashedWordTokenizer()
    words = ["touch", "pick", "up", "the", "red", "green", "blue", "yellow", "purple", "orange",
             "cube", "ball", "cylinder"]
    ids = tokenizer.convert_tokens_to_ids(words)
    assert len(set(ids)) == len(words)


def test_special_tokens_follow_the_buckets_and_batches_pad():
    tokenizer = HashedWordTokenizer(num_buckets=100)
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(100, 105))
    assert len(tokenizer) == 105
    batch = tokenizer(["a b c", "a"], padding=True, return_tensors="pt")
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["input_ids"][1, 2:].tolist() == [tokenizer.pad_token_id] * 2
    with pytest.raises(ValueError, match="num_buckets"):
        HashedWordTokenizer(num_buckets=0)


def test_save_load_round_trip_keeps_the_bucket_count(tmp_path):
    tokenizer = HashedWordTokenizer(num_buckets=512)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, HashedWordTokenizer) and len(loaded) == len(tokenizer)
    text = ["<spatial> go to the red cube", "x"]
    assert torch.equal(loaded(text, padding=True, return_tensors="pt")["input_ids"],
                       tokenizer(text, padding=True, return_tensors="pt")["input_ids"])


def test_llm_built_with_the_word_tokenizer_has_its_vocabulary():
    _, lm_head, tokenizer = build_language_model(deep_fusion_preset("tiny", tokenizer="word"))
    assert isinstance(tokenizer, HashedWordTokenizer)
    assert lm_head.out_features == len(tokenizer) == 4096 + len(SPECIAL_TOKENS)
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        make_file_free_tokenizer("bpe")
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        deep_fusion_preset("tiny", tokenizer="bpe")
