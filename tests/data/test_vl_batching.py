"""Images through the roles without Ray: placeholder expansion, the PIL image processor, multimodal collate,
row slicing, and a tiny Qwen2.5-VL whose sampling log-probs match the learner's forward on the collated batch."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from rlframe.data.batching import collate
from rlframe.models.multimodal import (
    IMAGE_PAD, VISION_END, VISION_START, Prompt, batch_vision_kwargs, check_prompt, collate_images,
    expand_image_pads, expand_image_pads_text, image_token_counts, pack_images, pixels, unpad_images, vision_kwargs,
    vision_special_ids)

D = 3 * 2 * 14 * 14  # channels x temporal patch x patch x patch


def _images(grids: list[tuple[int, int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    g = np.asarray(grids, dtype=np.int64).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    return {"pixel_values": rng.standard_normal((int(g.prod(1).sum()), D)).astype(np.float32), "image_grid_thw": g}


def test_token_counts_follow_the_grid_and_merge_size():
    assert image_token_counts([[1, 4, 4], [1, 2, 2], [1, 4, 6]], 2) == [4, 1, 6]
    assert image_token_counts([1, 4, 4], 1) == [16]


def test_expand_text_and_ids_agree():
    grid = [[1, 4, 4], [1, 2, 2]]
    text = f"a {VISION_START}{IMAGE_PAD}{VISION_END} b {VISION_START}{IMAGE_PAD}{VISION_END} c"
    out = expand_image_pads_text(text, grid, 2)
    assert out == f"a {VISION_START}{IMAGE_PAD * 4}{VISION_END} b {VISION_START}{IMAGE_PAD}{VISION_END} c"
    ids = expand_image_pads([7, 1, 9, 8, 1, 9, 3], grid, 2, pad_id=9)
    assert ids == [7, 1, 9, 9, 9, 9, 8, 1, 9, 3]
    check_prompt(ids, {"image_grid_thw": np.asarray(grid)}, 2, pad_id=9)
    with pytest.raises(ValueError, match="1 image placeholders .* but 2 images"):
        expand_image_pads([1, 9, 2], grid, 2, pad_id=9)
    with pytest.raises(ValueError, match="2 <\\|image_pad\\|> placeholders but 1 images"):
        expand_image_pads_text(text, [[1, 4, 4]], 2)
    with pytest.raises(ValueError, match="has 4 image tokens but its 2 images need 5"):
        check_prompt([9, 9, 9, 9], {"image_grid_thw": np.asarray(grid)}, 2, pad_id=9)


def test_pil_image_processor_gives_four_tokens_for_56_pixels():
    from PIL import Image

    from rlframe.tasks.preference.vl_task import VisionInputs

    vis = VisionInputs(image_size=56)
    out = vis.processor(images=[Image.new("RGB", (56, 56), (200, 30, 30)), Image.new("RGB", (64, 64))],
                        return_tensors="np")
    assert out["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]   # 64 px is resized to 56
    assert out["pixel_values"].shape == (32, D)
    assert image_token_counts(out["image_grid_thw"], 2) == [4, 4]
    small = VisionInputs(image_size=28).processor(images=[Image.new("RGB", (56, 56))], return_tensors="np")
    assert small["image_grid_thw"].tolist() == [[1, 2, 2]]                # one token per image


def test_prompt_is_a_list_of_ids_that_pickles_with_its_images():
    p = Prompt([1, 2, 3], _images([(1, 2, 2)]))
    assert p == [1, 2, 3] and len(p) == 3 and p[:2] == [1, 2]
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, Prompt) and q == [1, 2, 3]
    np.testing.assert_array_equal(q.images["pixel_values"], p.images["pixel_values"])
    assert type(p + [4]) is list    # concatenation gives plain ids (the probe builds its own)


def test_collate_keeps_each_rows_images_under_any_row_slice():
    rows = [Prompt([5, 9, 9, 6], _images([(1, 2, 2), (1, 2, 2)], 0)),   # two images
            Prompt([5, 9, 6, 6], _images([(1, 2, 2)], 1)),              # one image
            Prompt([5, 9, 9, 9, 6], _images([(1, 2, 2), (1, 4, 4)], 2)),
            [5, 6, 6]]                                                  # text only
    batch = collate(rows, [[1, 2], [3], [4, 2, 7], [2]], pad_id=0, eos_id=2)
    assert batch.pixel_values.shape == (4, 4 + 16, D) and batch.image_grid_thw.shape == (4, 2, 3)
    assert batch.image_grid_thw[3].sum() == 0 and batch.pixel_values[3].abs().sum() == 0
    # the flat form is the rows' images concatenated in row order
    pv, grid = unpad_images(batch.pixel_values, batch.image_grid_thw)
    want_pv, want_grid = pack_images([getattr(r, "images", None) for r in rows])
    torch.testing.assert_close(pv, want_pv)
    assert grid.tolist() == want_grid.tolist() == [[1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 4, 4]]
    # data-parallel shards and micro-batches slice rows: every slice keeps exactly its rows' images
    for ix in ([0, 3], [1, 2]):
        shard = batch.rows(ix)
        pv, grid = unpad_images(shard.pixel_values, shard.image_grid_thw)
        want = pack_images([getattr(rows[i], "images", None) for i in ix])
        torch.testing.assert_close(pv, want[0])
        assert grid.tolist() == want[1].tolist()
    # text-only batches are unchanged
    text = collate([[5, 6]], [[1]], pad_id=0)
    assert text.pixel_values is None and text.image_grid_thw is None


def test_collate_images_rejects_a_grid_that_does_not_match_the_pixels():
    bad = _images([(1, 2, 2)])
    bad["image_grid_thw"] = np.asarray([[1, 4, 4]])
    with pytest.raises(ValueError, match="4 pixel rows but image_grid_thw needs 16"):
        collate_images([bad])


class _Cfg:
    image_token_id = 9
    video_token_id = 9
    vision_start_token_id = 7
    vision_end_token_id = 8


def test_vision_kwargs_mark_image_tokens_and_skip_text_models():
    batch = collate([Prompt([7, 9, 9, 9, 9, 8, 3], _images([(1, 4, 4)]))], [[4, 2]], pad_id=0, eos_id=2)
    kw = batch_vision_kwargs(_Cfg(), batch)
    assert kw["mm_token_type_ids"].tolist() == [[0, 1, 1, 1, 1, 0, 0, 0, 0]]
    assert kw["pixel_values"].shape == (16, D) and kw["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert vision_kwargs(object(), batch.input_ids, kw["pixel_values"], kw["image_grid_thw"]) == {}
    assert batch_vision_kwargs(_Cfg(), collate([[7, 3]], [[4]], pad_id=0)) == {}
    assert vision_special_ids(_Cfg()) == [7, 8, 9] and vision_special_ids(object()) is None


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    """A tiny Qwen2.5-VL (random weights) and the image task's tokenizer/prompts on a small synthetic set."""
    from rlframe.config.schema import DataConfig, ModelConfig
    from rlframe.models.tiny import build_tiny_model
    from rlframe.tasks.preference.vl_task import token_ids
    from rlframe.tasks.registry import TASKS

    cache = tmp_path_factory.mktemp("vlcache")
    task = TASKS.get("preference_images").build(DataConfig(task="preference_images", num_train=8, num_eval=2, num_history=2,
                                                 verify_images=False), cache)
    tok = task.tokenizer
    prompts = task.vision.attach(task.train, [tok(s["prompt"], add_special_tokens=False)["input_ids"]
                                              for s in task.train], tok)
    path = build_tiny_model(ModelConfig(arch="qwen2_5_vl"), len(tok), None, tok.eos_token_id, tok.pad_token_id,
                            tmp_path_factory.mktemp("tinyvl"), vision_token_ids=token_ids(tok))
    return task, tok, prompts, str(path)


def test_image_task_prompts_hold_the_images_in_the_papers_order(tiny_vl):
    task, tok, prompts, _ = tiny_vl
    rec = task.train[0]
    assert len(rec["images"]) == 2 + 2 + 2 and rec["num_prefered"] == rec["num_non_prefered"] == 2
    order = rec["prefered_images"] + rec["non_prefered_images"] + [rec["imageA"], rec["imageB"]]
    assert all(full.endswith(rel) for full, rel in zip(rec["images"], order, strict=True))
    text = rec["prompt"]
    # one pad per image in the text; encoding expands each to the image's token count (4 for 56x56)
    assert text.count(VISION_START) == text.count(VISION_END) == text.count(IMAGE_PAD) == 6
    parts = rec["messages"][-1]["content"]
    assert rec["messages"][0]["role"] == "system" and rec["messages"][-1]["role"] == "user"
    assert [p["image"] for p in parts if p["type"] == "image"] == rec["images"]
    # liked references, disliked references, Image A, Image B
    assert text.index("likes") < text.index("dislikes") < text.index("Image A:") < text.index("Image B:")
    assert rec["target"].startswith("<visual preference profile>") and rec["target"].endswith("</answer>")
    ids = prompts[0]
    pad = tok.convert_tokens_to_ids(IMAGE_PAD)
    assert sum(t == pad for t in ids) == 24 and ids.images["image_grid_thw"].tolist() == [[1, 4, 4]] * 6
    assert pixels(ids.images).shape == (6 * 16, D)
    # the references of a user are shared by its samples: one array per image file, not per prompt
    same_user = [p for r, p in zip(task.train, prompts) if r["user_id"] == rec["user_id"]]
    assert len(same_user) > 1 and same_user[1].images["pixel_values"][0] is ids.images["pixel_values"][0]


def test_tiny_vl_generate_matches_the_learner_forward(tiny_vl):
    """Rows with different image counts, left-padded for generate and right-padded for the learner: the
    sampling log-probs equal the log-probs of a forward over the collated batch."""
    from rlframe.models.logprobs import token_logprobs
    from rlframe.models.loading import load_policy
    from rlframe.rollout.engine import SamplingSettings
    from rlframe.rollout.hf_engine import HFEngine

    _, tok, prompts, path = tiny_vl
    vs, ve = tok.convert_tokens_to_ids([VISION_START, VISION_END])
    ids, im = list(prompts[1]), prompts[1].images
    a, b = ids.index(vs), ids.index(ve)
    fewer = Prompt(ids[:a] + ids[b + 1:], {"pixel_values": im["pixel_values"][1:],
                                           "image_grid_thw": im["image_grid_thw"][1:]})   # drop the first image
    rows = [prompts[0], fewer]
    engine = HFEngine(path, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    outs = engine.generate(rows, SamplingSettings(n=2, temperature=1.0, max_new_tokens=12, seed=0))
    assert all(not set(o.token_ids) & set(vision_special_ids(engine.model.config)) for o in outs)
    batch = collate([rows[o.prompt_index] for o in outs], [o.token_ids for o in outs], tok.pad_token_id,
                    tok.eos_token_id)
    model = load_policy(path)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       **batch_vision_kwargs(model.config, batch)).logits[:, :-1]
        no_images = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    lp = token_logprobs(logits, batch.input_ids[:, 1:])
    for i, o in enumerate(outs):
        pos = batch.loss_mask[i].nonzero().flatten()
        torch.testing.assert_close(lp[i, pos], torch.tensor(o.logprobs), atol=1e-4, rtol=0)
    assert (logits - no_images).abs().max() > 1e-3          # the pixels do reach the language model
    probe = engine.probe_logprobs(list(prompts[0]) + o.token_ids, prompts[0].images)
    assert len(probe) == len(prompts[0]) + len(o.token_ids) - 1


def test_vl_rows_are_packed_with_each_groups_images_once(tiny_vl):
    """learner.packing on Qwen2.5-VL rows: each group's prompt and images are computed once, its rotary (t, h, w)
    positions are the padded rows' own, and a prompt with the same ids but other pictures is a group apart. The
    log-probs and gradients are the padded forward's."""
    from rlframe.models.loading import load_policy
    from rlframe.models.logprobs import token_logprobs
    from rlframe.models.shared_prefix import pack_micro_batch

    _, tok, prompts, path = tiny_vl
    model = load_policy(path)
    # the task's first two prompts are the same ids (the template, 4 tokens an image) for other pictures
    assert list(prompts[0]) == list(prompts[1])
    assert not np.array_equal(pixels(prompts[0].images), pixels(prompts[1].images))
    again = Prompt(list(prompts[0]), dict(prompts[1].images))      # another row object with the second's pictures
    rows = [prompts[0]] * 3 + [prompts[1]] * 2 + [again]
    special = set(vision_special_ids(model.config))
    words = [t for t in range(100, 200) if t not in special]
    comps = [words[i: i + n] for i, n in enumerate((4, 1, 2, 3, 2, 3))]
    batch = collate(rows, comps, tok.pad_token_id, tok.eos_token_id)
    packed = pack_micro_batch(model, batch)
    assert packed is not None and sorted(packed.sources) == [0, 3]             # two groups: rows 0-2 and 3-5
    assert packed.extra["image_grid_thw"].shape[0] == 2 * 6                   # 6 images a group, not 6 a row
    assert packed.position_ids.shape[0] == 3 and packed.input_ids.shape[0] < len(rows)
    padded = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   **batch_vision_kwargs(model.config, batch)).logits[:, :-1]
    out = packed.gather(model(**packed.model_inputs(torch.float32)).logits)
    mask, targets = batch.loss_mask, batch.input_ids[:, 1:]
    a, b = token_logprobs(padded, targets), token_logprobs(out, targets)
    torch.testing.assert_close(a * mask, b * mask, atol=1e-4, rtol=0)
    grads = []
    for logp in (a, b):
        model.zero_grad()
        (logp * mask).sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-3)
