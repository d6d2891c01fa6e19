"""An `async def` reward, as one calling a remote judge would be: rlframe awaits it, and per-sample
(veRL-style) coroutines of a batch run concurrently, so 64 calls of 50 ms take about 50 ms, not 3 s.

    reward.fns=[{name: async_judge, path: examples/rewards/async_style.py, function: compute_score,
                 timeout_s: 10}]
"""
import asyncio


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, latency_s=0.05):
    await asyncio.sleep(latency_s)  # stands in for an HTTP call to a judge model
    return 1.0 if f"<answer>{ground_truth}</answer>" in solution_str else 0.0
