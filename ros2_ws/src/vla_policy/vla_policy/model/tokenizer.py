"""Tokenizers and prompt layout.

Presets ship a byte-level tokenizer in code (no files, no downloads): ids 0..255 are UTF-8 bytes, then the
special tokens. A checkpoint's own ``tokenizer.json`` is loaded locally with the ``tokenizers`` package.

Two prompt formats (``BackboneConfig.prompt``):

- ``plain``: ``[BOS] <image> x num_image_tokens <instruction tokens>``.
- ``chat`` (GR00T N1.5): the Eagle processor files of the checkpoint (``processor/``: the Qwen3 tokenizer
  as ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json``, ``chat_template.json``,
  ``processor_config.json``) render one user turn holding every image and then the instruction written as
  GR00T writes it (``str([instruction])``), with the generation prompt; each ``<image-N>`` placeholder
  becomes ``<image N><img>`` + the image token x tokens per image + ``</img>``. Loaded offline only.

The image-token embeddings are replaced by the projected vision features in the backbone.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from vla_policy.model.config import BackboneConfig

logger = logging.getLogger(__name__)

BYTE_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>")
PROCESSOR_DIR = "processor"  # the chat prompt's files inside a checkpoint directory
CHAT_FILES = ("tokenizer_config.json", "chat_template.json", "processor_config.json")


class TextTokenizer(Protocol):
    """What the backbone needs from a tokenizer."""

    pad_id: int
    bos_id: int | None
    image_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def save_files(self, checkpoint_dir: Path) -> None:
        """Write the files it was loaded from into ``checkpoint_dir``, so a checkpoint saved from this
        policy (a fine-tune) loads the same tokenizer."""
        ...


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

    def save_files(self, checkpoint_dir: Path) -> None:
        """Built in: no files."""


class HFTokenizer:
    """A ``tokenizer.json`` loaded locally through the ``tokenizers`` package."""

    def __init__(self, path: Path, image_token: str, pad_token: str, bos_token: str | None) -> None:
        from tokenizers import Tokenizer  # optional dependency: only needed for checkpoint tokenizers

        self._tok = Tokenizer.from_file(str(path))
        self.path = Path(path)
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

    def save_files(self, checkpoint_dir: Path) -> None:
        target = Path(checkpoint_dir) / "tokenizer.json"
        if target.resolve() != self.path.resolve():
            shutil.copyfile(self.path, target)


class EagleChatTokenizer:
    """GR00T N1.5's prompt: the Eagle processor's chat template and its Qwen3 tokenizer, from local files.

    ``files`` is the processor folder (see the module docstring). Raises ``FileNotFoundError`` (one line
    naming the missing file) or ``ValueError`` for files that do not describe a usable processor.
    """

    def __init__(self, files: Path) -> None:
        files = Path(files)
        self.files = files
        for name in CHAT_FILES:
            if not (files / name).is_file():
                raise FileNotFoundError(
                    f"{files}: no {name} (the checkpoint's prompt is the Eagle chat template)"
                )
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

        tok_config = _read_json(files / "tokenizer_config.json")
        cls = tokenizer_class_from_name(str(tok_config.get("tokenizer_class", "Qwen2Tokenizer")))
        if cls is None:
            raise ValueError(f"{files}: unknown tokenizer_class {tok_config.get('tokenizer_class')!r}")
        try:
            self._tok = cls.from_pretrained(str(files), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{files}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from exc
        template = _read_json(files / "chat_template.json").get("chat_template")
        if not isinstance(template, str):
            raise ValueError(f"{files / 'chat_template.json'}: expected a 'chat_template' string")
        self.chat_template = template
        proc = _read_json(files / "processor_config.json")
        self.image_token = str(proc.get("image_token", "<IMG_CONTEXT>"))
        self.image_start = str(proc.get("image_start_token", "<img>"))
        self.image_end = str(proc.get("image_end_token", "</img>"))
        self.tokens_per_tile = int(proc.get("tokens_per_tile", 0))
        placeholder = str(proc.get("image_placeholder", "image"))
        self._placeholder = re.compile(rf"<{re.escape(placeholder)}-(\d+)>")
        image_id = self._tok.convert_tokens_to_ids(self.image_token)
        if image_id is None or image_id == self._tok.unk_token_id:
            raise ValueError(f"{files}: the tokenizer has no image token {self.image_token!r}")
        self.image_id: int = int(image_id)
        if self._tok.pad_token_id is None:
            raise ValueError(f"{files}: the tokenizer has no pad token")
        self.pad_id: int = int(self._tok.pad_token_id)
        self.bos_id: int | None = None
        self.vocab_size = len(self._tok)

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def save_files(self, checkpoint_dir: Path) -> None:
        target = Path(checkpoint_dir) / PROCESSOR_DIR
        if target.resolve() != self.files.resolve():
            shutil.copytree(self.files, target, dirs_exist_ok=True)

    def prompt_ids(self, instruction: str, num_images: int, tokens_per_image: int) -> list[int]:
        """Token ids of one observation's prompt: num_images images, then the instruction."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
        content.append({"type": "text", "text": str([instruction])})  # GR00T's language formatting
        text = self._tok.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        expanded = self._placeholder.sub(
            lambda m: (
                f"<image {m.group(1)}>{self.image_start}{self.image_token * tokens_per_image}{self.image_end}"
            ),
            text,
        )
        return list(self._tok(expanded, add_special_tokens=True)["input_ids"])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_tokenizer(config: BackboneConfig, checkpoint_dir: Path | None = None) -> TextTokenizer:
    """The chat tokenizer of ``checkpoint_dir/processor`` (prompt ``chat``), the checkpoint's
    ``tokenizer.json`` when present, else the built-in byte tokenizer."""
    if config.prompt == "chat":
        if checkpoint_dir is None:
            raise FileNotFoundError(
                "the 'chat' prompt needs the Eagle processor files of a checkpoint; a preset has none"
            )
        return EagleChatTokenizer(Path(checkpoint_dir) / PROCESSOR_DIR)
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
    """Token ids per instruction (``config.prompt``: ``[BOS] <image> x N <text>``, or the chat template),
    padded on ``config.padding_side``.

    Returns input_ids [B, L] and attention_mask [B, L]; every row holds exactly
    ``config.num_image_tokens`` image placeholders.
    """
    rows: list[list[int]] = []
    images = len(config.cameras) * config.history_frames
    for text in instructions:
        if config.prompt == "chat":
            if not isinstance(tokenizer, EagleChatTokenizer):
                raise TypeError("the 'chat' prompt needs an EagleChatTokenizer (load_tokenizer gives one)")
            ids = tokenizer.prompt_ids(
                text.replace(tokenizer.image_token, ""), images, config.tokens_per_image
            )
            rows.append(ids)
            continue
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
