"""transformers `generate` backend, for models or machines vLLM cannot serve."""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch

from rlframe.data.rollout_batch import Completion
from rlframe.models.loading import DTYPES, load_policy
from rlframe.models.logprobs import token_logprobs
from rlframe.models.multimodal import Prompt, rows_vision_kwargs, vision_special_ids
from rlframe.rollout.engine import SamplingSettings


class HFEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", device: str = "cpu",
                 eos_token_id: int | Sequence[int] | None = None, pad_token_id: int = 0, batch_size: int = 64) -> None:
        self.device = torch.device(device)
        self.model = load_policy(model_path, DTYPES[dtype]).to(self.device).eval()  # causal LM or VLM
        eos = eos_token_id if eos_token_id is not None else self.model.config.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else list(eos or [])   # a completion ends at any of them
        self.pad = pad_token_id
        self.batch_size = batch_size
        self.suppress = vision_special_ids(self.model.config)  # a VLM never samples its image tokens

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingSettings) -> list[Completion]:
        return [c for part in self.generate_stream(prompts, params) for c in part]

    @torch.no_grad()
    def generate_stream(self, prompts: Sequence[Sequence[int]], params: SamplingSettings) -> Iterator[list[Completion]]:
        """One `generate` call per `batch_size` rows (whole groups), yielded as each ends."""
        if params.seed is not None:
            torch.manual_seed(params.seed)
        flat = [(i, k, list(p)) for i, p in enumerate(prompts) for k in range(params.n)]
        rows = max(params.n, self.batch_size // params.n * params.n)
        for start in range(0, len(flat), rows):
            result: list[Completion] = []
            chunk = flat[start: start + rows]
            width = max(len(p) for _, _, p in chunk)
            ids = torch.full((len(chunk), width), self.pad, dtype=torch.long)
            att = torch.zeros_like(ids)
            for row, (_, _, p) in enumerate(chunk):  # left padding for decoder-only generation
                ids[row, width - len(p):] = torch.tensor(p)
                att[row, width - len(p):] = 1
            greedy = params.temperature == 0
            # prompts that carry images: pixel inputs concatenated in row order
            vision = rows_vision_kwargs(self.model.config, ids.to(self.device), [prompts[i] for i, _, _ in chunk])
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=att.to(self.device), **vision,
                suppress_tokens=self.suppress,
                do_sample=not greedy, temperature=None if greedy else params.temperature,
                top_p=None if greedy else params.top_p,
                top_k=params.top_k if (params.top_k > 0 and not greedy) else None,
                max_new_tokens=params.max_new_tokens, repetition_penalty=params.repetition_penalty,
                eos_token_id=self.eos, pad_token_id=self.pad,
                return_dict_in_generate=True, output_logits=True)
            new = out.sequences[:, width:].cpu()
            logits = torch.stack(out.logits, dim=1).cpu()  # [B, steps, V]
            lps = token_logprobs(logits, new, temperature=1.0 if greedy else params.temperature)
            for row, (pi, k, _) in enumerate(chunk):
                toks = new[row].tolist()
                n = len(toks)
                finish = "length"
                end = next((j for j, t in enumerate(toks) if t in self.eos), None)
                if end is not None:
                    n, finish = end + 1, "stop"
                result.append(Completion(pi, toks[:n], lps[row, :n].tolist(), finish_reason=finish, sample_index=k))
            yield result

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = self.model.state_dict(keep_vars=True)  # includes tied names such as lm_head.weight
        for name, tensor in weights:
            if name not in params:
                raise KeyError(f"weight sync: the generator's model has no parameter {name!r}")
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))

    @torch.no_grad()
    def probe_logprobs(self, token_ids: Sequence[int], images: dict | None = None) -> list[float]:
        ids = torch.tensor([list(token_ids)], device=self.device)
        logits = self.model(input_ids=ids, **rows_vision_kwargs(self.model.config, ids, [Prompt(token_ids, images)])
                            ).logits[:, :-1]
        return token_logprobs(logits, ids[:, 1:]).squeeze(0).tolist()
