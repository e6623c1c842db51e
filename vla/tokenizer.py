"""File-free tokenizers: the default tokenizers of an LLM built from config.

``ByteTokenizer``: ids ``0..255`` are the UTF-8 bytes. ``HashedWordTokenizer``: each lower-cased
word (or punctuation mark) is hashed into one of ``num_buckets`` ids, so a word is one token and
any text is covered without a vocabulary file. In both, the special tokens follow the base ids.
They are regular ``transformers`` slow tokenizers, so batching, padding, truncation,
``save_pretrained`` and ``from_pretrained`` behave as for any HF tokenizer, and the rest of
``vla/`` treats them and a pretrained LLM's tokenizer alike.
"""

import hashlib
import re

from transformers import AddedToken, PreTrainedTokenizer

BYTE_COUNT = 256
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
IMAGE_TOKEN = "<image>"
SPATIAL_TOKEN = "<spatial>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN, SPATIAL_TOKEN)
TOKENIZERS = ("byte", "word")
_WORD = re.compile(r"\w+|[^\w\s]")


def _byte_token(value: int) -> str:
    return f"<0x{value:02X}>"


class FileFreeTokenizer(PreTrainedTokenizer):
    """``base_size`` base ids, then ``<pad> <bos> <eos> <image> <spatial>``.

    ``<image>`` and ``<spatial>`` written in the text become their ids, so a prompt such as
    ``"<image><image> pick the red cube"`` carries the placeholders for two visual tokens.
    Subclasses set ``base_size`` before calling ``__init__`` and define the base tokens.

    Args:
        add_bos_token: prepend ``<bos>`` to every encoded sequence.
    """

    model_input_names = ["input_ids", "attention_mask"]
    base_size: int

    def __init__(self, add_bos_token: bool = True, **kwargs):
        self._added_tokens_decoder = {
            self.base_size + i: AddedToken(token, special=True, normalized=False)
            for i, token in enumerate(SPECIAL_TOKENS)
        }
        self.add_bos_token = add_bos_token
        kwargs.setdefault("pad_token", PAD_TOKEN)
        kwargs.setdefault("bos_token", BOS_TOKEN)
        kwargs.setdefault("eos_token", EOS_TOKEN)
        kwargs.setdefault("extra_special_tokens", [IMAGE_TOKEN, SPATIAL_TOKEN])
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(add_bos_token=add_bos_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.base_size

    def get_vocab(self) -> dict[str, int]:
        vocab = {self._convert_id_to_token(i): i for i in range(self.base_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        bos = [self.bos_token_id] if self.add_bos_token else []
        ids = bos + token_ids_0
        return ids if token_ids_1 is None else ids + token_ids_1

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        bos = [1] if self.add_bos_token else []
        return bos + [0] * len(token_ids_0) + ([0] * len(token_ids_1) if token_ids_1 else [])

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """The vocabulary is implicit; ``save_pretrained`` writes only the config files."""
        return ()


class ByteTokenizer(FileFreeTokenizer):
    """UTF-8 bytes plus ``<pad> <bos> <eos> <image> <spatial>`` (ids 256-260)."""

    base_size = BYTE_COUNT

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [_byte_token(b) for b in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            return int(token[3:5], 16)
        return self.unk_token_id if self.unk_token is not None else self.pad_token_id

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < BYTE_COUNT:
            raise ValueError(f"byte token id must be in [0, {BYTE_COUNT}), got {index}")
        return _byte_token(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        pieces = bytearray()
        for token in tokens:
            if token in self.added_tokens_encoder:
                pieces.extend(token.encode("utf-8"))
            else:
                pieces.append(self._convert_token_to_id(token))
        return pieces.decode("utf-8", errors="replace")


class HashedWordTokenizer(FileFreeTokenizer):
    """One id per lower-cased word or punctuation mark: ``blake2b(word) mod num_buckets``.

    A word is one token, which a small LLM trained from scratch reads far more easily than the
    letters of its spelling. The hash is stable across processes and machines; two words share an
    id only by collision (about ``n_words**2 / (2 * num_buckets)`` pairs in a vocabulary of
    ``n_words``). Decoding is not possible: ids decode to their bucket names ``<w17>``.

    Args:
        num_buckets: base ids.
        add_bos_token: prepend ``<bos>`` to every encoded sequence.
    """

    def __init__(self, num_buckets: int = 4096, add_bos_token: bool = True, **kwargs):
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        self.base_size = num_buckets
        super().__init__(add_bos_token=add_bos_token, num_buckets=num_buckets, **kwargs)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return _WORD.findall(text.lower())

    def _convert_token_to_id(self, token: str) -> int:
        if token.startswith("<w") and token.endswith(">") and token[2:-1].isdigit():
            return int(token[2:-1])
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.base_size

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < self.base_size:
            raise ValueError(f"word token id must be in [0, {self.base_size}), got {index}")
        return f"<w{index}>"

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)


def make_file_free_tokenizer(kind: str) -> FileFreeTokenizer:
    """``"byte"``: :class:`ByteTokenizer`; ``"word"``: :class:`HashedWordTokenizer`."""
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {kind!r}")
    return ByteTokenizer() if kind == "byte" else HashedWordTokenizer()
