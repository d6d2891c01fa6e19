"""Real checkpoint conventions: prompts rendered by the checkpoint's chat template (equal to
apply_chat_template's output), SFT targets ending with its end of turn, generation_config's EOS ids, and image
token counts from the checkpoint's image processor for images of several sizes and aspect ratios."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rlframe.config import load_config
from rlframe.data.chat import ChatFormat, chat_messages, stop_token_ids
from rlframe.models.multimodal import IMAGE_PAD, VISION_START
from rlframe.tasks.preference.synthetic import generate_samples
from rlframe.tasks.preference.vocab import DIMENSIONS
from rlframe.trainer.driver import Driver
from rlframe.trainer.sft import sft_target
from tests.qwen_checkpoint import ENDOFTEXT, IM_END, PREPROCESSOR, qwen_tokenizer, save_qwen_style


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory) -> Path:
    return save_qwen_style(tmp_path_factory.mktemp("qwen2"), generate_samples(64, seed=0))


def prepared(tmp_path: Path, *overrides: str) -> Driver:
    d = Driver(load_config([f"run.output_dir={tmp_path / 'run'}", f"run.cache_dir={tmp_path / 'cache'}",
                            "data.num_train=16", "data.num_eval=4", *overrides]))
    d.prepare()
    return d


def test_chat_format_finds_the_end_of_turn_and_renders_like_the_tokenizer():
    tok = qwen_tokenizer(generate_samples(8, seed=1))
    fmt = ChatFormat(tok)
    assert fmt.end_of_turn == IM_END and fmt.close("x") == "x<|im_end|>" and fmt.close("x<|im_end|>") == "x<|im_end|>"
    msgs = chat_messages("Which?", system="Sys.")
    assert fmt.prompt(msgs) == "<|im_start|>system\nSys.<|im_end|>\n<|im_start|>user\nWhich?<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 images"):
        chat_messages("<image><image>", ["a.png"])


def test_text_checkpoint_prompts_targets_and_stop_ids(tmp_path, text_ckpt):
    d = prepared(tmp_path, "model=hf", f"model.path={text_ckpt}", "data.system_prompt=Judge images.")
    tok = d.tokenizer
    rec = d.task.train[0]
    assert rec["messages"][0] == {"role": "system", "content": "Judge images."}
    want = tok.apply_chat_template(rec["messages"], add_generation_prompt=True, tokenize=False)
    assert rec["prompt"] == want and want.startswith("<|im_start|>system\nJudge images.<|im_end|>\n")
    ids = tok.apply_chat_template(rec["messages"], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(d.train_prompts[0]) == list(ids)
    im_end, eot = tok.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    assert d.stop_ids == [im_end, eot] == stop_token_ids(text_ckpt, tok) and d.pad_id == eot
    assert rec["target"].endswith("</answer><|im_end|>")
    target = sft_target(d.encode(rec["target"]), d.stop_ids)
    assert target[-1] == im_end and target.count(im_end) == 1      # not appended twice
    assert all(r["prompt"].startswith("<|im_start|>system") for r in d.task.eval)


def test_without_a_chat_template_the_task_format_and_tokenizer_eos_stay(tmp_path):
    d = prepared(tmp_path)
    assert d.task.train[0]["prompt"].startswith("<|user|>\n") and d.stop_ids == [d.tokenizer.eos_token_id]
    assert sft_target([5, 6], d.stop_ids) == [5, 6, d.tokenizer.eos_token_id]


def _preferimg(root: Path, sizes: list[tuple[int, int]]) -> Path:
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (30 * i, 90, 160)).save(root / f"im{i}.png")
    n = len(sizes)
    recs = [{"id": f"r{k}", "user_id": "u", "prefered_images": [f"im{(k + 0) % n}.png"],
             "non_prefered_images": [f"im{(k + 1) % n}.png"], "imageA": f"im{(k + 2) % n}.png",
             "imageB": f"im{(k + 3) % n}.png", "prefer_attributes": dict(zip(DIMENSIONS, "ABCDE")),
             "non_prefer_attributes": dict(zip(DIMENSIONS, "FGHIJ")),
             "conversations": [{"value": "Liked <image> disliked <image> A <image> B <image> which?"},
                               {"value": "<answer>Image A</answer>"}]} for k in range(n)]
    (root / "data.jsonl").write_text("\n".join(map(json.dumps, recs)) + "\n")
    return root / "data.jsonl"


def _pad_runs(ids: list[int], pad: int) -> list[int]:
    runs, n = [], 0
    for t in ids + [None]:
        if t == pad:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


@pytest.mark.parametrize("max_pixels", [None, 56 * 56 * 2])
def test_vl_checkpoint_image_tokens_follow_its_processor(tmp_path, max_pixels):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    sizes = [(56, 56), (200, 60), (40, 170), (130, 97), (300, 300)]
    data = _preferimg(tmp_path, sizes)
    ckpt = save_qwen_style(tmp_path / "vl", generate_samples(16, seed=2), vl=True)
    d = prepared(tmp_path, "model=hf", f"model.path={ckpt}", "rollout=hf", "data.task=preference_images",
                 f"data.path={data}", "data.num_history=1", "data.val_split_ratio=0.2",
                 *([f"data.max_pixels={max_pixels}"] if max_pixels else []))
    proc = Qwen2VLImageProcessorPil.from_pretrained(str(ckpt))
    if max_pixels:
        proc = Qwen2VLImageProcessorPil(min_pixels=PREPROCESSOR["min_pixels"], max_pixels=max_pixels)
    pad = d.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    counts = set()
    for rec, ids in zip(d.task.train + d.task.eval, d.train_prompts + d.eval_prompts):
        assert rec["prompt"] == d.tokenizer.apply_chat_template(rec["messages"], add_generation_prompt=True,
                                                                tokenize=False)
        assert rec["prompt"].count(VISION_START) == 4 and rec["prompt"].count(IMAGE_PAD) == 4
        want = []
        for path in rec["images"]:
            with Image.open(path) as im:
                grid = proc(images=[im.convert("RGB")], return_tensors="np")["image_grid_thw"][0]
            want.append(int(grid.prod()) // 4)
        assert _pad_runs(list(ids), pad) == want
        counts.update(want)
    assert len(counts) >= 3                      # sizes and aspect ratios give different token counts
    assert (max(counts) <= 56 * 56 * 2 // 784) == bool(max_pixels)
