"""The embedded byte-level tokenizer."""

import torch

from vla.tokenizer import BYTE_COUNT, ByteTokenizer


def test_special_token_ids_follow_the_bytes():
    tokenizer = ByteTokenizer()
    ids = tokenizer.convert_tokens_to_ids(["<pad>", "<bos>", "<eos>", "<image>", "<spatial>"])
    assert ids == list(range(BYTE_COUNT, BYTE_COUNT + 5))
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == tuple(ids[:3])
    assert len(tokenizer) == BYTE_COUNT + 5


def test_encodes_utf8_bytes_and_placeholders_and_decodes_back():
    tokenizer = ByteTokenizer()
    text = "<image><image> prends le cube rouge é"
    ids = tokenizer(text)["input_ids"]
    image = tokenizer.convert_tokens_to_ids("<image>")
    assert ids[:3] == [tokenizer.bos_token_id, image, image]
    assert ids[3:] == list(" prends le cube rouge é".encode("utf-8"))
    assert tokenizer.decode(ids, skip_special_tokens=True) == " prends le cube rouge é"
    assert tokenizer.decode(ids[1:]) == text
    assert ByteTokenizer(add_bos_token=False)("ab")["input_ids"] == [97, 98]


def test_batches_pad_and_truncate():
    tokenizer = ByteTokenizer()
    batch = tokenizer(["a", "abcd"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[257, 97, 256, 256, 256], [257, 97, 98, 99, 100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    left = ByteTokenizer(padding_side="left")(["a", "abc"], padding=True, return_tensors="pt")
    assert left["input_ids"][0].tolist() == [256, 256, 257, 97]
    truncated = tokenizer(["abcdef"], truncation=True, max_length=3, return_tensors="pt")
    assert truncated["input_ids"].tolist() == [[257, 97, 98]]


def test_save_and_load_round_trip(tmp_path):
    tokenizer = ByteTokenizer(padding_side="left")
    tokenizer.save_pretrained(tmp_path)
    loaded = ByteTokenizer.from_pretrained(tmp_path)
    text = ["<spatial> go ü", "x"]
    assert torch.equal(loaded(text, padding=True, return_tensors="pt")["input_ids"],
                       tokenizer(text, padding=True, return_tensors="pt")["input_ids"])
    assert loaded.padding_side == "left"
