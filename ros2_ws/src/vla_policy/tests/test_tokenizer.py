from __future__ import annotations

from vla_policy.model.presets import get_preset
from vla_policy.model.tokenizer import ByteTokenizer, build_prompts
from vla_policy.strict_config import replace


def test_byte_tokenizer_round_trip_utf8() -> None:
    tok = ByteTokenizer()
    text = "grasp the cup — gently"
    assert tok.decode(tok.encode(text)) == text
    assert max(tok.encode(text)) < 256 <= min(tok.pad_id, tok.bos_id, tok.image_id)


def test_prompt_is_bos_images_then_text() -> None:
    cfg = get_preset("tiny").backbone
    tok = ByteTokenizer()
    p = build_prompts(tok, ["hi"], cfg)
    ids = p.input_ids[0].tolist()
    assert ids == [tok.bos_id] + [tok.image_id] * cfg.num_image_tokens + list(b"hi")
    assert p.attention_mask.all()


def test_long_instruction_truncated_to_max_text_tokens() -> None:
    cfg = replace(get_preset("tiny").backbone, max_text_tokens=5)
    p = build_prompts(ByteTokenizer(), ["x" * 100], cfg)
    assert p.input_ids.shape[1] == 1 + cfg.num_image_tokens + 5


def test_left_and_right_padding_masks() -> None:
    tok = ByteTokenizer()
    for side in ("left", "right"):
        cfg = replace(get_preset("tiny").backbone, padding_side=side)
        p = build_prompts(tok, ["a", "abcd"], cfg)
        row = p.attention_mask[0].tolist()
        assert row.count(False) == 3
        pad_at = 0 if side == "left" else -1
        assert row[pad_at] is False and p.input_ids[0, pad_at].item() == tok.pad_id
