"""Prompts as chat messages, rendered with the checkpoint's own chat template when it has one.

A task gives each record ``messages`` (a system turn and the user turn; images as ``{"type": "image"}``
parts in prompt order, Hugging Face's multimodal message form) besides its own ``prompt`` text. A model
folder whose tokenizer carries a chat template then sees its own format: ``apply_chat_template`` with
``add_generation_prompt=True`` renders the prompt, SFT targets end with the template's end-of-turn text, and
generation stops on every EOS id of the checkpoint's ``generation_config.json`` (Qwen has two). Pure: no Ray.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

IMAGE_PLACEHOLDER = "<image>"


def chat_messages(question: str, images: Sequence[str] = (), system: str | None = None) -> list[dict[str, Any]]:
    """The system turn (if any) and the user turn. With images, each ``<image>`` of `question` becomes an
    image part (``{"type": "image", "image": path}``) in order and the text between them text parts."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if not images:
        return msgs + [{"role": "user", "content": question}]
    pieces = question.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != len(images):
        raise ValueError(f"question has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders but {len(images)} images")
    content: list[dict[str, Any]] = []
    for k, text in enumerate(pieces):
        if text:
            content.append({"type": "text", "text": text})
        if k < len(images):
            content.append({"type": "image", "image": str(images[k])})
    return msgs + [{"role": "user", "content": content}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


class ChatFormat:
    """A tokenizer's chat template: the generation prompt for a message list, and how an answer ends."""

    PROBE = "\x00rlframe-answer\x00"

    def __init__(self, tokenizer: Any) -> None:
        if not has_chat_template(tokenizer):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.end_of_turn = self._end_of_turn()

    def prompt(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _end_of_turn(self) -> str:
        """What the template writes after an assistant message's content (``<|im_end|>`` for ChatML), found
        by rendering a probe answer; trailing whitespace (the template's newline) is not generated."""
        user = [{"role": "user", "content": "hi"}]
        head = self.prompt(user)
        full = self.tokenizer.apply_chat_template(user + [{"role": "assistant", "content": self.PROBE}],
                                                  tokenize=False)
        at = full.find(self.PROBE)
        if not full.startswith(head) or at < 0:
            raise ValueError("the chat template renders an assistant turn that does not continue its generation "
                             "prompt; rlframe cannot tell where an answer ends")
        return full[at + len(self.PROBE):].rstrip()

    def close(self, target: str) -> str:
        """An SFT target as the template would end the assistant turn."""
        return target if not self.end_of_turn or target.endswith(self.end_of_turn) else target + self.end_of_turn


def stop_token_ids(model_dir: str | Path | None, tokenizer: Any) -> list[int]:
    """Every id that ends generation: the checkpoint's ``generation_config.json`` ``eos_token_id`` (an id or a
    list), then the tokenizer's EOS; the first is the one SFT appends when there is no chat template."""
    ids: list[int] = []
    path = Path(model_dir) / "generation_config.json" if model_dir else None
    if path is not None and path.is_file():
        try:
            eos = json.loads(path.read_text()).get("eos_token_id")
        except (OSError, ValueError):
            eos = None
        ids += [eos] if isinstance(eos, int) else [i for i in (eos or []) if isinstance(i, int)]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def render_records(records: Sequence[dict[str, Any]], fmt: ChatFormat) -> int:
    """Re-render the prompt of every record that carries ``messages`` with the chat template, and end its
    SFT target with the template's end of turn; returns how many were rendered."""
    n = 0
    for rec in records:
        if isinstance(rec.get("messages"), list):
            rec["prompt"] = fmt.prompt(rec["messages"])
            if rec.get("target"):
                rec["target"] = fmt.close(rec["target"])
            n += 1
    return n
