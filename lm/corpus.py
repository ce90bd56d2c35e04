"""A corpus as symbols: PTB tokens, the vocabulary, uint8 ids, the train/valid/test split, user text.

Three corpora (paper §4.1):

  ptb     Mikolov's `ptb.char.{train,valid,test}.txt`. One symbol per whitespace-separated
          token plus one end-of-line symbol ("\\n") per non-empty line: 5,017,482 / 393,042 /
          442,423 symbols, 50 in the vocabulary (49 characters, "_" between words, and EOL).
          The vocabulary is the training split's; valid or test symbols outside it are an error.
  text8   one file of a-z and space (27 symbols, a fixed vocabulary); split 90% / 5% / 5% in
          order, which is exactly 90M / 5M / 5M for the real 10^8 characters.
  enwik8  one file of bytes; the vocabulary is every byte value occurring in the file (each byte
          is stored as the character with that code, latin-1); split 90% / 5% / 5% in order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .corpus_files import DATASETS

SPLITS = ("train", "valid", "test")
EOL = "\n"  # the PTB end-of-line symbol
TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # text8 and enwik8: first 90%, next 5%, last 5%


def ptb_symbols(text: str, where: str = "text") -> str:
    """PTB char text -> its symbols as one string: the tokens of each non-empty line, then EOL."""
    symbols = []
    for number, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        long_token = next((token for token in tokens if len(token) != 1), None)
        if long_token is not None:
            raise ValueError(f"{where} line {number}: token {long_token!r} is not one character "
                             "(not a character-level PTB file)")
        symbols.append("".join(tokens) + EOL)
    return "".join(symbols)


def split_sizes(total: int, fractions: tuple[float, ...] = SPLIT_FRACTIONS) -> tuple[int, int, int]:
    """Sizes of train / valid / test for `total` symbols: 90M / 5M / 5M for 10^8."""
    valid = round(total * fractions[1])
    test = round(total * fractions[2])
    return total - valid - test, valid, test


def _split(text: str) -> tuple[str, str, str]:
    train, valid, _ = split_sizes(len(text))
    return text[:train], text[train:train + valid], text[train + valid:]


def to_ids(symbols: str, vocab: list[str], where: str) -> np.ndarray:
    """Map a string of symbols to uint8 ids; a symbol outside `vocab` is a ValueError naming it."""
    codes = np.frombuffer(symbols.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(max(max(map(ord, vocab)), int(codes.max(initial=0))) + 1, -1, dtype=np.int64)
    table[[ord(symbol) for symbol in vocab]] = np.arange(len(vocab))
    ids = table[codes]
    if (ids < 0).any():
        unknown = sorted({chr(c) for c in np.unique(codes[ids < 0])})
        raise ValueError(f"{where}: {len(unknown)} symbol(s) outside the vocabulary: "
                         + ", ".join(repr(s) for s in unknown[:20]))
    return ids.astype(np.uint8)


def corpus_from_files(dataset: str, files: dict[str, Path]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read a corpus's data files (names as in `corpus_files.DOWNLOADS`) into (vocab, ids per split)."""
    if dataset == "ptb":
        symbols = {split: ptb_symbols(files[f"ptb.char.{split}.txt"].read_text(encoding="ascii", errors="strict"),
                                      str(files[f"ptb.char.{split}.txt"])) for split in SPLITS}
        vocab = sorted(set(symbols["train"]))
    elif dataset == "text8":
        path = files["text8"]
        text = path.read_bytes().decode("latin-1")
        vocab = list(TEXT8_ALPHABET)
        to_ids(text, vocab, str(path))  # checks the alphabet before splitting
        symbols = dict(zip(SPLITS, _split(text)))
    elif dataset == "enwik8":
        text = files["enwik8"].read_bytes().decode("latin-1")  # byte b -> chr(b), one to one
        vocab = sorted(set(text))
        symbols = dict(zip(SPLITS, _split(text)))
    else:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    for split, text in symbols.items():
        if not text:
            raise ValueError(f"{dataset}: the {split} split is empty")
    if len(vocab) < 2 or len(vocab) > 256:
        raise ValueError(f"{dataset}: vocabulary of {len(vocab)} symbols (need 2 to 256)")
    return vocab, {split: to_ids(text, vocab, f"{dataset} {split}") for split, text in symbols.items()}


def encode_text(text: str, vocab: list[str], dataset: str) -> list[int]:
    """Ids of free text for a model trained on `dataset`.

    Documented replacements: ptb writes a run of spaces between words as "_" and a newline as
    its end-of-line symbol; enwik8 reads the text's UTF-8 bytes. Any other character the
    vocabulary lacks is a ValueError that names it.
    """
    if dataset == "ptb":
        symbols = EOL.join("_".join(line.split()) for line in text.split("\n"))
    elif dataset == "enwik8":
        symbols = text.encode("utf-8").decode("latin-1")
    else:
        symbols = text
    if not symbols:
        raise ValueError("the text is empty")
    known = set(vocab)
    unknown = sorted({symbol for symbol in symbols if symbol not in known})
    if unknown:
        shown = "".join(symbol for symbol in vocab if symbol.isprintable())
        raise ValueError(f"the text has characters this {dataset} model does not know: "
                         + " ".join(repr(s) for s in unknown[:20]) + f" (it knows {shown!r})")
    index = {symbol: i for i, symbol in enumerate(vocab)}
    return [index[symbol] for symbol in symbols]
