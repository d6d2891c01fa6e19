"""PPO's critic: one rank of its own DeepSpeed group (the role "critic"), a value head on the policy's
architecture, initialised from the policy folder.

Thin on purpose: the process group, ZeRO set-up and checkpoints are LearnerWorker's; only the model (backbone +
Linear(hidden, 1)) and the two calls of a step differ. `values` scores the rank's rows and keeps its micro-batches
and those values (the clip's anchor); `update` then fits them to the driver's GAE returns.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from rlframe.config.schema import AlgorithmConfig
from rlframe.data.batching import TrainBatch
from rlframe.learner.learner import LearnerWorker
from rlframe.learner.update import in_row_order, pad_rows, run_critic_updates
from rlframe.models.loading import DTYPES


class ValueModel(torch.nn.Module):
    """The policy's transformer without its LM head, and a scalar head: V of the prefix at every position.
    The head starts at zero (V = 0 everywhere), so the first advantages are the plain discounted rewards."""

    def __init__(self, model_path: str, dtype: torch.dtype) -> None:
        super().__init__()
        from transformers import AutoModel

        self.backbone = AutoModel.from_pretrained(model_path, dtype=dtype)
        self.config = self.backbone.config
        self.value_head = torch.nn.Linear(self.config.hidden_size, 1, dtype=dtype)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def gradient_checkpointing_enable(self) -> None:
        self.backbone.gradient_checkpointing_enable()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state
        return self.value_head(hidden).squeeze(-1).float()


class CriticWorker(LearnerWorker):
    def build_model(self, model_path: str, dtype: torch.dtype) -> torch.nn.Module:
        return ValueModel(model_path, dtype)

    def _values(self, mb: TrainBatch) -> torch.Tensor:
        """[b, w-1]: position t holds V of the prefix that predicts token t+1 (aligned with loss_mask)."""
        packed = self._packed(mb)
        if packed is not None:   # a group's prompt computed once, as for the policy
            return packed.gather(self.engine(**packed.model_inputs(DTYPES[self.dtype])))
        return self.engine(input_ids=mb.input_ids, attention_mask=mb.attention_mask)[:, :-1]

    @torch.no_grad()
    def values(self, batch: TrainBatch, algo: AlgorithmConfig) -> torch.Tensor:
        """The rank's rows' values ([rows, width of `batch`], 0 off the completion mask), kept for `update`."""
        t0 = time.perf_counter()
        self.engine.eval()
        minis = self._minibatches(batch, algo)
        olds = self.no_grad_pass(self._values, self.forward_parts(batch), minis)
        self._pending = (minis, olds, time.perf_counter() - t0)
        return in_row_order(minis, pad_rows([v * mb.loss_mask for m, om in zip(minis, olds) for mb, v in zip(m, om)],
                                             batch.loss_mask.shape[1]))

    def update(self, returns: torch.Tensor, lr: float, algo: AlgorithmConfig) -> dict[str, Any]:
        """Fit the values kept by `values` to `returns` (this rank's rows, [rows, width]); critic/* metrics."""
        if self._pending is None:
            raise RuntimeError("critic update needs a `values` call of this step first")
        minis, olds, t_values = self._pending
        self._pending = None
        rets = [[returns[mb.index.cpu(), : mb.loss_mask.shape[1]].to(self.device) for mb in m] for m in minis]
        t1 = time.perf_counter()
        self.engine.train()
        self._set_lr(lr)
        out = run_critic_updates(self.engine, self._values, minis, olds, rets, algo, self.scales(minis, "token_mean"))
        return {**out, "critic/lr": lr, "timing/critic_values": t_values, "timing/critic": time.perf_counter() - t1}
