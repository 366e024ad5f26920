"""Tokenizers and prompt layout.

Presets ship a byte-level tokenizer in code (no files, no downloads): ids 0..255 are UTF-8 bytes, then the
special tokens. A checkpoint's own ``tokenizer.json`` is loaded locally with the ``tokenizers`` package.

The prompt is ``[BOS] <image> x num_image_tokens <instruction tokens>``; the ``<image>`` embeddings are
replaced by the projected vision features in the backbone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from vla_policy.model.config import BackboneConfig

logger = logging.getLogger(__name__)

BYTE_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>")


class TextTokenizer(Protocol):
    """What the backbone needs from a tokenizer."""

    pad_id: int
    bos_id: int | None
    image_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes (ids 0..255) plus special tokens <pad>=256, <bos>=257, <eos>=258, <image>=259."""

    def __init__(self) -> None:
        self.special = {tok: 256 + i for i, tok in enumerate(BYTE_SPECIAL_TOKENS)}
        self.pad_id = self.special["<pad>"]
        self.bos_id: int | None = self.special["<bos>"]
        self.eos_id = self.special["<eos>"]
        self.image_id = self.special["<image>"]
        self.vocab_size = 256 + len(BYTE_SPECIAL_TOKENS)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``tokenizer.json`` loaded locally through the ``tokenizers`` package."""

    def __init__(self, path: Path, image_token: str, pad_token: str, bos_token: str | None) -> None:
        from tokenizers import Tokenizer  # optional dependency: only needed for checkpoint tokenizers

        self._tok = Tokenizer.from_file(str(path))
        image_id = self._tok.token_to_id(image_token)
        if image_id is None:
            raise ValueError(f"{path}: tokenizer has no image token {image_token!r}")
        self.image_id = image_id
        pad_id = self._tok.token_to_id(pad_token)
        self.pad_id = pad_id if pad_id is not None else 0
        self.bos_id = self._tok.token_to_id(bos_token) if bos_token else None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids


def load_tokenizer(config: BackboneConfig, checkpoint_dir: Path | None = None) -> TextTokenizer:
    """The checkpoint's ``tokenizer.json`` when present, else the built-in byte tokenizer."""
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "tokenizer.json").is_file():
        logger.info("loading tokenizer.json from %s", checkpoint_dir)
        return HFTokenizer(
            Path(checkpoint_dir) / "tokenizer.json", config.image_token, config.pad_token, config.bos_token
        )
    return ByteTokenizer()


@dataclass(frozen=True)
class TokenizedPrompts:
    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] bool, False on padding


def build_prompts(
    tokenizer: TextTokenizer, instructions: list[str], config: BackboneConfig
) -> TokenizedPrompts:
    """Token ids ``[BOS] <image> x N <text>`` per instruction, padded on ``config.padding_side``.

    Returns input_ids [B, L] and attention_mask [B, L]; every row holds exactly
    ``config.num_image_tokens`` image placeholders.
    """
    rows: list[list[int]] = []
    for text in instructions:
        ids = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
        ids += [tokenizer.image_id] * config.num_image_tokens
        text_ids = [i for i in tokenizer.encode(text) if i != tokenizer.image_id]  # no forged placeholders
        ids += text_ids[: config.max_text_tokens]
        rows.append(ids)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        if config.padding_side == "left":
            input_ids[i, length - len(r) :] = torch.tensor(r)
            mask[i, length - len(r) :] = True
        else:
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
    return TokenizedPrompts(input_ids=input_ids, attention_mask=mask)
