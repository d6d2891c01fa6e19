"""Fast tests of the pure parts of rlframe/learner/weight_sync.py (bucket planning, digests)."""
from __future__ import annotations

import torch

from rlframe.weight_sync.buckets import Digest, iter_verified, plan_buckets, tensor_bytes


def _named() -> list[tuple[str, torch.Tensor]]:
    return [("embed.weight", torch.arange(12, dtype=torch.float32).reshape(3, 4)),
            ("layer.0.bias", torch.tensor([1.0, -2.0, 3.5])),
            ("layer.0.scale", torch.tensor([7], dtype=torch.int64)),
            ("empty", torch.zeros(0)),
            ("head.weight", torch.linspace(-1, 1, 10, dtype=torch.bfloat16))]


def _digest(named) -> str:
    d = Digest()
    d.update(named)
    return d.hexdigest()


# ------------------------------------------------------------------------------------ plan_buckets
def test_tensor_bytes():
    assert tensor_bytes(torch.zeros(3, 4)) == 48                    # 12 * 4
    assert tensor_bytes(torch.zeros(10, dtype=torch.bfloat16)) == 20
    assert tensor_bytes(torch.zeros(0)) == 0


def test_plan_buckets_respects_limit_and_order():
    sizes = [("a", 40), ("b", 30), ("c", 30), ("d", 50), ("e", 60), ("f", 10)]
    buckets = plan_buckets(sizes, 100)
    # a+b+c = 100 (fits exactly), d+e = 110 > 100 -> d alone, e+f = 70
    assert buckets == [["a", "b", "c"], ["d"], ["e", "f"]]
    size = dict(sizes)
    assert all(sum(size[n] for n in b) <= 100 for b in buckets)
    assert [n for b in buckets for n in b] == [n for n, _ in sizes]     # order kept, nothing lost


def test_plan_buckets_oversized_tensor_gets_own_bucket():
    buckets = plan_buckets([("a", 10), ("huge", 500), ("b", 10), ("c", 95)], 100)
    # huge > limit: closes "a", sits alone; b + c = 105 > 100 -> split
    assert buckets == [["a"], ["huge"], ["b"], ["c"]]
    assert plan_buckets([("huge", 500)], 100) == [["huge"]]
    assert plan_buckets([], 100) == []


# ------------------------------------------------------------------------------------ Digest
def test_digest_is_deterministic_and_order_sensitive():
    named = _named()
    assert _digest(named) == _digest([(n, t.clone()) for n, t in named])
    assert len(_digest(named)) == 32                                 # xxh3-128, 16 bytes
    swapped = [named[1], named[0]] + named[2:]
    assert _digest(swapped) != _digest(named)


def test_digest_detects_value_dtype_shape_and_name_changes():
    named = _named()
    ref = _digest(named)

    one_elem = [(n, t.clone()) for n, t in named]
    one_elem[0][1][2, 3] += 1e-3                                     # a single element
    assert _digest(one_elem) != ref

    dtype = list(named)
    dtype[1] = ("layer.0.bias", named[1][1].double())               # same values, other dtype
    assert _digest(dtype) != ref

    shape = list(named)
    shape[0] = ("embed.weight", named[0][1].reshape(4, 3))           # same bytes, other shape
    assert _digest(shape) != ref

    renamed = list(named)
    renamed[2] = ("layer.1.scale", named[2][1])
    assert _digest(renamed) != ref


def test_digest_handles_non_contiguous_views():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert _digest([("w", t.t())]) == _digest([("w", t.t().contiguous())])


# ------------------------------------------------------------------------------------ iter_verified
def test_iter_verified_yields_all_in_order_and_digest_ignores_bucketing():
    named = _named()
    d1, d2 = Digest(), Digest()
    one_bucket = list(iter_verified([named], d1))
    split = list(iter_verified([named[:1], named[1:4], [], named[4:]], d2))
    assert [n for n, _ in one_bucket] == [n for n, _ in named]
    assert [n for n, _ in split] == [n for n, _ in named]
    assert all(a is b for (_, a), (_, b) in zip(split, named))       # the same tensors, not copies
    assert d1.hexdigest() == d2.hexdigest() == _digest(named)


def test_iter_verified_without_digest_and_lazy_hashing():
    named = _named()
    assert [n for n, _ in iter_verified([named[:2], named[2:]], None)] == [n for n, _ in named]
    d = Digest()
    it = iter_verified([named[:2], named[2:]], d)
    next(it)                                                         # only the first bucket is hashed
    assert d.hexdigest() == _digest(named[:2])
    list(it)
    assert d.hexdigest() == _digest(named)
