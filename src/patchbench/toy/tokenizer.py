"""The toy suite's tokenizer: a word-level vocabulary with GPT-2-like segmentation.

The tasks depend on a few segmentation properties of GPT-2's BPE, and this tokenizer keeps
exactly those while staying tiny and fully predictable:

- words carry their leading space (``" Ada"`` and ``"Ada"`` are different tokens), as in GPT-2;
- numbers of one to three digits are single tokens (``" 37"``, ``"120"``), so arithmetic
  answers are one token;
- four-digit numbers split into two two-digit tokens, ``" 1745" -> [" 17", "45"]``, which is
  what the greater-than task needs (answers are the no-space tokens ``"00"`` ... ``"99"``);
- punctuation runs and whitespace runs are tokens of their own (GPT-2's regex rules).

The vocabulary is every pre-token of the training corpus plus the numbers 0-299 (with and
without a leading space; larger ones only if the corpus has them) and ``"00"``-``"99"``, so every task answer exists even if the corpus
happens to miss one. Unknown words map to ``<|unk|>``. Built with the Hugging Face
``tokenizers`` library and saved as ``tokenizer.json``; ``load_tokenizer`` returns a
``transformers.PreTrainedTokenizerFast`` with bos = eos = ``<|endoftext|>``, pad = ``<|pad|>``
and unk = ``<|unk|>``. The tokenizer never adds special tokens itself: TransformerLens prepends
BOS when asked to, as it does for GPT-2.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

if TYPE_CHECKING:  # transformers takes seconds to import; the corpus / tokenizer jobs do not need it
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "BOS",
    "PAD",
    "UNK",
    "PRETOKEN_PATTERN",
    "build_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "pretokenize",
]

log = logging.getLogger(__name__)

BOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
SPECIALS = [BOS, PAD, UNK]

# GPT-2's pre-tokenizer regex with the digit rule changed: 1-3 digit numbers are one piece,
# a 4-digit number is two 2-digit pieces (the first keeps the leading space).
PRETOKEN_PATTERN = (
    r"'(?:s|t|re|ve|m|ll|d)"
    r"| ?\p{L}+"
    r"| ?\d{1,3}(?!\d)"
    r"| ?\d\d(?=\d\d(?!\d))"
    r"|\d\d"
    r"| ?[^\s\p{L}\p{N}]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated", invert=False)


def pretokenize(text: str) -> list[str]:
    """The pieces ``text`` splits into before the vocabulary lookup (each becomes one token)."""
    return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text)]


MAX_NUMBER_TOKEN = 299  # 0..299 are single tokens with and without a leading space (Stolfo max_n 250 fits)


def _number_tokens() -> list[str]:
    nums = [str(i) for i in range(MAX_NUMBER_TOKEN + 1)]
    return (
        nums + [" " + n for n in nums] + [f"{i:02d}" for i in range(100)] + [f" {i:02d}" for i in range(100)]
    )


def build_tokenizer(texts: Iterable[str], extra_texts: Iterable[str] = (), min_count: int = 1) -> Tokenizer:
    """Build the word-level tokenizer from corpus documents.

    Ids: the special tokens first, then the number tokens, then the corpus pre-tokens ordered
    by descending count and then alphabetically, then pieces that only ``extra_texts`` (the
    data directory's word lists and templates, ``patchbench.toy.corpus.vocabulary_texts``)
    contain. The result is a deterministic function of its inputs.
    """
    pre = _pre_tokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        for part in text.split(BOS):
            counts.update(piece for piece, _ in pre.pre_tokenize_str(part))
    vocab: dict[str, int] = {}
    for tok in SPECIALS + _number_tokens():
        vocab.setdefault(tok, len(vocab))
    for tok, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= min_count and tok not in vocab:
            vocab[tok] = len(vocab)
    extra = sorted({piece for text in extra_texts for piece, _ in pre.pre_tokenize_str(text)} - set(vocab))
    for piece in extra:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    log.info(
        "toy tokenizer: %d tokens (%d distinct corpus pieces, %d from the word lists only)",
        len(vocab),
        len(counts),
        len(extra),
    )
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    specials = {"bos_token": BOS, "eos_token": BOS, "pad_token": PAD, "unk_token": UNK}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=1) + "\n")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1024,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def load_tokenizer(model_dir: Path | str) -> PreTrainedTokenizerFast:
    """The toy tokenizer saved in ``model_dir`` (a folder with tokenizer.json, or the file itself).

    Loaded from the folder with ``from_pretrained`` so that ``name_or_path`` points at it:
    TransformerLens's ``set_tokenizer`` reloads the tokenizer from there with
    ``add_bos_token=True``, exactly as it does for GPT-2.
    """
    path = Path(model_dir)
    file = path if path.suffix == ".json" else path / "tokenizer.json"
    if not file.exists():
        raise FileNotFoundError(
            f"no toy tokenizer at {file}; build it with the workflow's toy_tokenizer rule "
            "(snakemake ... results/models/<model>/tokenizer.json)."
        )
    from transformers import PreTrainedTokenizerFast

    specials = {"bos_token": BOS, "eos_token": BOS, "pad_token": PAD, "unk_token": UNK}
    if path.is_dir() and (path / "tokenizer_config.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(path), **specials)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(file), clean_up_tokenization_spaces=False, model_max_length=1024, **specials
    )
