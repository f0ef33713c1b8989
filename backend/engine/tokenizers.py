"""Tokenizers built offline: CLIP's BPE and T5's Unigram model shipped with the engine, a
tiny CLIP and a tiny T5.

A single-file checkpoint carries the text encoders' weights but not their tokenizer;
diffusers would fetch it from the Hub. The CLIP BPE vocabulary is fully determined by
its merge list (CLIP's own SimpleTokenizer builds it the same way), so shipping the
merges is enough. T5 (FLUX's and SD3's third encoder) ships as its tokenizer file. The
tiny vocabularies serve the built-in test models (the tiny T5 is a SentencePiece-style
Unigram model built in code).
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"
CLIP_MERGES = ASSETS / "clip_bpe_merges.txt"
T5_TOKENIZER = ASSETS / "t5_tokenizer.json.gz"
CLIP_VOCAB_SIZE = 49408  # 256 bytes + 256 word-final bytes + 48894 merges + 2 specials
MAX_LENGTH = 77  # CLIP's context; SD and SDXL pad every prompt to it

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _vocabulary(merges: list[str]) -> dict[str, int]:
    """Vocabulary in CLIP's order: bytes, word-final bytes, merges, then the specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges] + [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def clip_merges() -> list[str]:
    lines = CLIP_MERGES.read_text(encoding="utf-8").splitlines()
    return [line for line in lines[1:] if line]  # line 0 is the "#version" header


def tiny_merges() -> list[str]:
    """Every pair of lowercase letters: enough for prompts to become a handful of tokens."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [f"{a} {b}" for a in letters for b in letters]


TINY_VOCAB_SIZE = 2 * 256 + 26 * 26 + 2


@functools.lru_cache(maxsize=8)
def build_tokenizer(kind: str, pad_token: str = EOS) -> Any:
    """A CLIPTokenizer for `kind` "clip" (OpenAI's vocabulary) or "tiny".

    SDXL's second tokenizer pads with "!" instead of the end token; pass pad_token="!".
    """
    from transformers import CLIPTokenizer

    merges = {"clip": clip_merges, "tiny": tiny_merges}[kind]()
    with tempfile.TemporaryDirectory(prefix="differential-inpaint-tokenizer-") as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(_vocabulary(merges)), encoding="utf-8")
        (Path(folder) / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
        )
        return CLIPTokenizer.from_pretrained(
            folder,
            model_max_length=MAX_LENGTH,
            bos_token=BOS,
            eos_token=EOS,
            unk_token=EOS,
            pad_token=pad_token,
            local_files_only=True,
        )


def tokenizer_for_vocab_size(vocab_size: int, pad_token: str = EOS) -> Any:
    """The tokenizer whose vocabulary a text encoder's embedding table was trained on."""
    if vocab_size == CLIP_VOCAB_SIZE:
        return build_tokenizer("clip", pad_token)
    if vocab_size == TINY_VOCAB_SIZE:
        return build_tokenizer("tiny", pad_token)
    raise ValueError(
        f"The text encoder has a vocabulary of {vocab_size} tokens; only CLIP's "
        f"({CLIP_VOCAB_SIZE}) is known. Convert the model to a diffusers folder with its tokenizer."
    )


# T5 (FLUX's and SD3's third text encoder) tokenizes with a SentencePiece Unigram model:
# "▁" marks a word start. The tiny one: every letter, alone and starting a word.
_T5_SPECIALS = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
TINY_T5_VOCAB_SIZE = len(_T5_SPECIALS) + 1 + 2 * 26


@functools.lru_cache(maxsize=2)
def build_t5_tokenizer(kind: str = "tiny") -> Any:
    """A T5 tokenizer (pad 0, end 1, unknown 2, as T5's own), never downloaded: "t5xxl" is
    the T5 v1.1 vocabulary FLUX.1 and SD3 use (32000 pieces and 100 sentinels), "tiny" the
    built-in models' one."""
    from transformers import T5TokenizerFast

    if kind == "t5xxl":
        from tokenizers import Tokenizer

        text = gzip.decompress(T5_TOKENIZER.read_bytes()).decode("utf-8")
        # The sentinels (<extra_id_N>) are in the file already: add none again.
        return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(text), extra_ids=0, model_max_length=512)
    if kind != "tiny":
        raise ValueError(f"Unknown T5 tokenizer '{kind}': the built-in ones are 't5xxl' and 'tiny'.")
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = [*_T5_SPECIALS, ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in letters] + [(c, -3.5) for c in letters]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
