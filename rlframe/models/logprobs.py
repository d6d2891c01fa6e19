"""Per-token log-probabilities, shared by the learners, the transformers engine and the probes (pure torch)."""
from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(target_t) under softmax(logits_t / T); T matches the sampler so ratios are unbiased."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def window_logprobs(logits: torch.Tensor, start: int, input_ids: torch.Tensor, temperature: float = 1.0
                    ) -> torch.Tensor:
    """[B, L-1] log-probs of input_ids[:, 1:] from the logits of the columns `start`.. only (0 before `start`,
    where no loss reads): the layout every per-token tensor of a learner micro-batch has."""
    return torch.nn.functional.pad(token_logprobs(logits, input_ids[:, 1 + start:], temperature), (start, 0))
