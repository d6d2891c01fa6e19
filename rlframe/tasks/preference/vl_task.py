"""The preference task with real images, for vision-language policies (``data.task=preference_images``).

Data: PreferImg / PreferThinker records loaded (and checked) by ``preferimg.py``, either from
``data.path`` / ``data.eval_path`` (comma-separated files, one per subset) or, when no path is given, a synthetic-user data set written by
``synth_dataset.py`` once and cached under ``<run.cache_dir>/preference_images/<hash of its settings>``.

Prompt: the user turn holds every image in the paper's order (``data.num_history`` preferred references,
as many non-preferred references, "Image A", "Image B"), each as ``<|vision_start|><|image_pad|><|vision_end|>``
(Qwen2.5-VL's chat markers). Each record also carries the chat ``messages`` (system turn, then the user turn
with image parts), which a checkpoint's chat template renders instead (``rlframe/data/chat.py``). When the
prompt is encoded, each image's single ``<|image_pad|>`` becomes a run of one token per merged patch group,
``prod(image_grid_thw) / merge_size**2``, from the image processor: transformers' PIL-only
``Qwen2VLImageProcessorPil`` (the torchvision one cannot be used here), configured from the checkpoint's
``preprocessor_config.json`` when it has one (Qwen2.5-VL's dynamic resolution: ``min_pixels``/``max_pixels``,
14-pixel patches, 2x2 merge), else from ``data.image_size``; ``data.min_pixels``/``data.max_pixels`` override
either. Each image file is preprocessed once. Target: the record's chain of thought.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rlframe.config.schema import DataConfig
from rlframe.data.chat import chat_messages
from rlframe.errors import ConfigError
from rlframe.models.multimodal import (
    IMAGE_PAD, VISION_END, VISION_START, VISION_TOKENS, Prompt, check_prompt, expand_image_pads)
from rlframe.tasks.preference.preferimg import load_preferimg
from rlframe.tasks.preference.synth_dataset import (
    EVAL_SPLITS, SynthConfig, balanced_eval, eval_samples_per_user, question, seen_users, write_dataset)
from rlframe.tasks.preference.rewards import EVAL_METRICS
from rlframe.tasks.preference.synthetic import build_prompt
from rlframe.tasks.preference.tokenizer import build_tokenizer
from rlframe.tasks.registry import TaskData, register_task

IMAGE = "<image>"


def image_processor(image_size: int, patch_size: int = 14, merge_size: int = 2, min_pixels: int | None = None,
                    max_pixels: int | None = None, checkpoint: str | Path | None = None):
    """transformers' PIL-only Qwen2-VL image processor: the checkpoint's (its preprocessor_config.json) when
    given, else one resizing every image to about image_size^2 pixels; min/max_pixels override either."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    factor = patch_size * merge_size
    if checkpoint is not None:
        proc = Qwen2VLImageProcessorPil.from_pretrained(str(checkpoint))
        lo, hi = proc.size.get("shortest_edge"), proc.size.get("longest_edge")
        if min_pixels is None and max_pixels is None:
            return proc
        kw = {k: getattr(proc, k) for k in ("patch_size", "merge_size", "temporal_patch_size", "image_mean",
                                            "image_std")}
        return Qwen2VLImageProcessorPil(min_pixels=min_pixels or lo, max_pixels=max_pixels or hi, **kw)
    return Qwen2VLImageProcessorPil(min_pixels=min_pixels or factor * factor,
                                    max_pixels=max_pixels or max(factor, image_size) ** 2,
                                    patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2)


class VisionInputs:
    """Pixel inputs of image files (each preprocessed once) and the prompts that carry them."""

    def __init__(self, image_size: int, patch_size: int = 14, merge_size: int = 2, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> None:
        self.image_size, self.min_pixels, self.max_pixels = image_size, min_pixels, max_pixels
        self.processor = image_processor(image_size, patch_size, merge_size, min_pixels, max_pixels)
        self.merge_size = merge_size
        self.cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def use_checkpoint(self, model_dir: str | Path) -> bool:
        """Preprocess images the way the checkpoint expects, if its folder has a preprocessor_config.json."""
        if not (Path(model_dir) / "preprocessor_config.json").is_file():
            return False
        self.processor = image_processor(self.image_size, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                                         checkpoint=model_dir)
        self.merge_size = int(self.processor.merge_size)
        self.cache.clear()
        return True

    def image(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """(pixel_values [P, D] float32, image_grid_thw [1, 3]) of one image file."""
        if path not in self.cache:
            from PIL import Image

            with Image.open(path) as im:
                out = self.processor(images=[im.convert("RGB")], return_tensors="np")
            self.cache[path] = (np.asarray(out["pixel_values"], dtype=np.float32),
                                np.asarray(out["image_grid_thw"], dtype=np.int64).reshape(-1, 3))
        return self.cache[path]

    def images(self, paths: Sequence[str]) -> dict[str, Any]:
        """A prompt's images: per-image pixel arrays (shared with every prompt showing the same file) and
        the [K, 3] grid."""
        parts = [self.image(p) for p in paths]
        return {"pixel_values": [p for p, _ in parts], "image_grid_thw": np.concatenate([g for _, g in parts])}

    @staticmethod
    def prompt_text(question_text: str) -> str:
        """The task's own prompt format (no chat template): each ``<image>`` becomes the vision markers
        around one ``<|image_pad|>``, expanded to the image's token count when encoded."""
        return build_prompt(question_text.replace(IMAGE, f"{VISION_START}{IMAGE_PAD}{VISION_END}"))

    def attach(self, records: Sequence[dict[str, Any]], prompts: Sequence[Sequence[int]], tokenizer: Any) -> list[Prompt]:
        """Each record's prompt ids, every image's pad expanded to its token count, with the images' pixel
        inputs; checks the image-token count of every one."""
        pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        out = []
        for rec, ids in zip(records, prompts):
            images = self.images(rec["images"])
            try:
                ids = expand_image_pads(ids, images["image_grid_thw"], self.merge_size, pad_id)
                check_prompt(ids, images, self.merge_size, pad_id)
            except ValueError as err:
                raise ConfigError(f"sample {rec['id']}: {err}") from None
            out.append(Prompt(ids, images))
        return out

    @staticmethod
    def token_ids(tokenizer: Any) -> dict[str, int]:
        """The vision markers' ids, which the model config must name."""
        return token_ids(tokenizer)


def token_ids(tokenizer: Any) -> dict[str, int]:
    return {"vision_start": tokenizer.convert_tokens_to_ids(VISION_START),
            "image_pad": tokenizer.convert_tokens_to_ids(IMAGE_PAD),
            "vision_end": tokenizer.convert_tokens_to_ids(VISION_END)}


def synth_config(cfg: DataConfig) -> SynthConfig:
    """A synthetic data set just large enough for data.num_train / data.num_eval samples."""
    num_users = min(200, max(8, cfg.num_train // 16))
    sc = SynthConfig(num_users=num_users, num_history=5, image_size=cfg.image_size, seed=cfg.seed)
    sc.samples_per_user = math.ceil(cfg.num_train / max(1, seen_users(sc)))
    sc.eval_samples_per_user = eval_samples_per_user(sc, cfg.num_eval)
    return sc


def synthesize(cfg: DataConfig, cache_dir: Path) -> Path:
    """Write (or reuse) the synthetic data set for these settings; returns its folder."""
    sc = synth_config(cfg)
    key = hashlib.sha256(json.dumps(asdict(sc), sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) / "preference_images" / key
    if (root / "meta.json").is_file():
        return root
    tmp = root.with_name(f"{key}.tmp-{random.randrange(1 << 30)}")
    write_dataset(tmp, sc)
    try:
        tmp.rename(root)
    except OSError:          # another run wrote it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _load(path: str | Path, cfg: DataConfig, image_root: str | None, skipped: list[int]) -> list[dict[str, Any]]:
    res = load_preferimg(path, image_root=image_root, num_history=cfg.num_history, on_invalid=cfg.on_invalid,
                         verify_images=cfg.verify_images)
    skipped.append(res.skipped)
    return res.records


def _question(rec: dict[str, Any], template: str | None = None) -> str:
    """The user turn: data.question_template filled in when set, else the record's question if its <image>
    placeholders match its images, else rlframe's default layout."""
    if template:
        return template.format(liked=IMAGE * rec["num_prefered"], disliked=IMAGE * rec["num_non_prefered"],
                               image_a=IMAGE, image_b=IMAGE)
    q = rec["question"]
    if q.count(IMAGE) == len(rec["images"]):
        return q
    return question(rec["num_prefered"], rec["num_non_prefered"])


def split_held_out(records: list[dict[str, Any]], ratio: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded shuffle, then `ratio` of the records (at least one) held out as split "val"."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    k = min(len(records) - 1, max(1, round(ratio * len(records))))
    held = [{**records[i], "split": records[i].get("split") or "val"} for i in order[:k]]
    return [records[i] for i in sorted(order[k:])], held


@register_task("preference_images", vision=True, reads_files=True)
def build_preference_images(cfg: DataConfig, cache_dir: Path) -> TaskData:
    skipped: list[int] = []
    if cfg.path is None:
        root = synthesize(cfg, cache_dir)
        train = _load(root / "train.jsonl", cfg, None, skipped)
        evals = balanced_eval({s: _load(root / f"{s}.jsonl", cfg, None, skipped) for s in EVAL_SPLITS}, cfg.num_eval)
    else:
        train = _load(cfg.path, cfg, cfg.image_root, skipped)
        evals = []
        for path in (p.strip() for p in (cfg.eval_path or "").split(",") if p.strip()):
            recs = _load(path, cfg, cfg.image_root, skipped)
            for r in recs:     # a record without a subset is reported under its file's name (SP_ID.jsonl)
                r["split"] = r.get("split") or Path(path).stem
            evals += recs
    if cfg.path is not None and not evals and cfg.val_split_ratio > 0:
        train, evals = split_held_out(train, cfg.val_split_ratio, cfg.seed)
    train, evals = train[: cfg.num_train], evals[: cfg.num_eval]
    if not train:
        raise ConfigError(f"data.task=preference_images: no training records (data.path={cfg.path!r})")
    vision = VisionInputs(cfg.image_size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    for rec in train + evals:
        q = _question(rec, cfg.question_template)
        rec["question"] = q
        rec["prompt"] = vision.prompt_text(q)
        rec["messages"] = chat_messages(q, rec["images"], cfg.system_prompt)
        if rec.get("target") is None:   # records without a chain of thought: the answer only
            rec["target"] = f"<answer>{rec['answer']}</answer>"
    # BPE on the text around the images (the vision tokens are added whole, as special tokens)
    tok = build_tokenizer([{"prompt": r["question"].replace(IMAGE, " "), "target": r["target"]} for r in train])
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS], special_tokens=True)
    return TaskData(train=train, eval=evals, tokenizer=tok, vision=vision, eval_metrics=EVAL_METRICS,
                    skipped=sum(skipped))
