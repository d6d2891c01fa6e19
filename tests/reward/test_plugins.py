"""Fast tests of rlframe/reward/plugins.py and remote.py/server.py: every calling convention, loading by
file / dotted path / registry, and the HTTP service (in a thread)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.plugins import PluginReward, RewardError, check_reward, detect_style

HERE = str(Path(__file__).resolve())
SAMPLES = [{"id": f"s{i}", "prompt": f"<p{i}>", "completion": c, "answer": a, "task": "t", "n": i}
           for i, (c, a) in enumerate([("x <answer>Image A</answer>", "Image A"), ("<answer>Image A</answer>", "Image B"),
                                       ("no answer", "Image A")])]


# ---- user functions in each convention (loaded from this file by `path`)
def trl_fn(prompts, completions, answer, **kwargs):
    assert kwargs["n"] == [0, 1, 2] and kwargs["id"] == ["s0", "s1", "s2"]   # every record field arrives
    return [float(a in c) for c, a in zip(completions, answer)]


def trl_no_kwargs(prompts, completions):
    return [float(len(c)) for c in completions]


def openrlhf_fn(queries, prompts, labels):
    import torch

    return {"rewards": torch.tensor([float(q.startswith(p) and lab in q) for q, p, lab in zip(queries, prompts, labels)]),
            "scores": [0.5] * len(queries), "extra_logs": {"qlen": torch.tensor([float(len(q)) for q in queries])}}


def openrlhf_tensor(queries, prompts, labels):
    return [1.0] * len(queries)


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    assert data_source == "t" and extra_info["id"].startswith("s")
    return {"score": float(ground_truth in solution_str), "chars": float(len(solution_str))}


def verl_dapo(data_source, solution_str, ground_truth, extra_info=None):
    # veRL's math_dapo convention: a bool accuracy and the parsed answer's text beside the score
    ok = ground_truth in solution_str
    return {"score": 1.0 if ok else -1.0, "acc": ok, "pred": solution_str[-9:]}


def verl_mixed(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": 1.0, "acc": True} if ground_truth in solution_str else 0.0


def verl_nan_extra(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": 1.0, "ratio": float("nan")}


def verl_float(data_source, solution_str, ground_truth, extra_info=None):
    return 2.0


async def verl_async(data_source, solution_str, ground_truth, extra_info=None):
    await asyncio.sleep(0.2)
    return 1.0


async def trl_async(prompts, completions, **kw):
    await asyncio.sleep(0.01)
    return [0.25] * len(completions)


def batch_dicts(samples):
    return [{"comp": float(s["n"]), "double": 2.0 * s["n"]} for s in samples]


def batch_scaled(samples, scale=1.0):
    return [scale * s["n"] for s in samples]


class Counter:
    built = 0

    def __init__(self, offset=0.0):
        Counter.built += 1
        self.offset = offset

    def __call__(self, samples):
        return [self.offset + s["n"] for s in samples]


def two_args_no_names(a, b):
    return []


def load(function, **spec):
    return PluginReward(RewardFnConfig(name=spec.pop("name", function), path=HERE, function=function, **spec))


@pytest.mark.parametrize("function,style", [("trl_fn", "trl"), ("trl_no_kwargs", "trl"), ("openrlhf_fn", "openrlhf"),
                                            ("compute_score", "verl"), ("verl_async", "verl"), ("batch_dicts", "batch"),
                                            ("Counter", "batch")])
def test_style_is_detected_from_the_signature(function, style):
    assert load(function).style == style


def test_trl_style_receives_columns():
    assert load("trl_fn")(SAMPLES) == {"trl_fn": [1.0, 0.0, 0.0]}
    assert load("trl_no_kwargs")(SAMPLES) == {"trl_no_kwargs": [26.0, 24.0, 9.0]}


def test_openrlhf_style_queries_labels_and_extra_logs():
    out = load("openrlhf_fn", name="o")(SAMPLES)
    assert out["o"] == [1.0, 0.0, 0.0]
    assert out["o/scores"] == [0.5] * 3
    assert out["o/qlen"] == [4.0 + 26, 4.0 + 24, 4.0 + 9]
    assert load("openrlhf_tensor")(SAMPLES) == {"openrlhf_tensor": [1.0, 1.0, 1.0]}
    # labels come from label_key
    out = load("openrlhf_fn", name="o", label_key="task")(SAMPLES)
    assert out["o"] == [0.0, 0.0, 0.0]


def test_verl_style_per_sample_score_dicts_and_ground_truth():
    out = load("compute_score", name="v")(SAMPLES)
    assert out == {"v": [1.0, 0.0, 0.0], "v/chars": [26.0, 24.0, 9.0]}
    samples = [{**s, "reward_model": {"ground_truth": "no answer"}} for s in SAMPLES]
    assert load("compute_score", name="v")(samples)["v"] == [0.0, 0.0, 1.0]
    assert load("verl_float")(SAMPLES) == {"verl_float": [2.0, 2.0, 2.0]}


def test_verl_extras_as_written_for_verl_bools_count_text_is_left_out(caplog):
    reward = load("verl_dapo", name="v")
    assert reward(SAMPLES) == {"v": [1.0, -1.0, -1.0], "v/acc": [1.0, 0.0, 0.0]}
    assert "extra key 'pred' is not a number on every sample" in caplog.text
    reward(SAMPLES)
    assert caplog.text.count("extra key 'pred'") == 1   # said once per reward, not every batch
    # a float for some samples and a dict for others: the score is kept; the extra, missing for some, is not
    mixed = load("verl_mixed", name="m")
    assert mixed(SAMPLES) == {"m": [1.0, 0.0, 0.0]} and mixed(SAMPLES[:1]) == {"m": [1.0]}   # once left out, always
    # a number that is not finite is still an error, extra or not; a bool as the score counts 1 or 0
    with pytest.raises(RewardError, match=r"returned nan for 'n/ratio' on sample 's0': expected a finite number"):
        load("verl_nan_extra", name="n")(SAMPLES)
    assert load("verl_bool", name="b")(SAMPLES) == {"b": [1.0, 0.0, 0.0]}
    with pytest.raises(RewardError, match=r"reward 'z' returned NoneType None: expected one number per sample"):
        load("trl_none", name="z")(SAMPLES)


def trl_none(prompts, completions, **kwargs):
    return None


def verl_bool(data_source, solution_str, ground_truth, extra_info=None):
    return ground_truth in solution_str


def test_async_functions_are_awaited_and_per_sample_calls_run_concurrently():
    t0 = time.perf_counter()
    assert load("verl_async")(SAMPLES * 4) == {"verl_async": [1.0] * 12}
    assert time.perf_counter() - t0 < 12 * 0.2 / 2          # concurrent, not 12 x 0.2 s in a row
    assert load("trl_async")(SAMPLES) == {"trl_async": [0.25] * 3}


def test_batch_style_list_of_dicts_and_call_kwargs():
    out = load("batch_dicts", name="comp")(SAMPLES)
    assert out == {"comp": [0.0, 1.0, 2.0], "comp/double": [0.0, 2.0, 4.0]}
    assert load("batch_scaled", kwargs={"scale": 3.0})(SAMPLES) == {"batch_scaled": [0.0, 3.0, 6.0]}


def test_class_is_built_once_with_kwargs():
    r = load("Counter", kwargs={"offset": 10.0})
    cls = type(r.fn)                      # the class of the file loaded as a module of its own
    before = cls.built
    assert r(SAMPLES) == {"Counter": [10.0, 11.0, 12.0]} and r(SAMPLES[:1]) == {"Counter": [10.0]}
    assert cls.built == before and before >= 1


def test_declared_style_wins_and_bad_style_is_refused():
    assert detect_style(batch_scaled, "batch") == "batch"
    with pytest.raises(RewardError, match=r"style='pytorch'; expected one of auto, batch, trl, trl_conversational, trl_standard, openrlhf, verl"):
        detect_style(batch_scaled, "pytorch", "x")
    with pytest.raises(RewardError, match=r"cannot tell the calling convention from its signature \(a, b\)"):
        load("two_args_no_names")


def test_dotted_path_and_builtin_resolution():
    r = PluginReward(RewardFnConfig(name="len", _target_="tests.reward.test_plugins:trl_no_kwargs"))
    assert r(SAMPLES)["len"] == [26.0, 24.0, 9.0]
    assert check_reward(RewardFnConfig(name="format")) == "builtin"
    assert check_reward(RewardFnConfig(name="x", _target_="os.path.basename")) == "batch"   # basename(p)


@pytest.mark.parametrize("spec,message", [
    (dict(name="nope"), "reward 'nope' is not a registered reward (registered: ['accuracy', 'format', "),
    (dict(name="f", path="/no/such/file.py"), "reward file '/no/such/file.py' does not exist"),
    (dict(name="missing_fn", path=HERE), "defines no 'missing_fn' (callables there: ["),
    (dict(name="t", _target_="no_such_module_xyz:fn"), "cannot import 'no_such_module_xyz'"),
    (dict(name="t", _target_="os:no_such_attr"), "module 'os' has no attribute 'no_such_attr'"),
    (dict(name="t", _target_="os:sep", path=HERE), "give one of _target_, path, url (got _target_, path)"),
])
def test_resolution_errors_name_the_reward_and_the_problem(spec, message):
    with pytest.raises(RewardError) as info:
        check_reward(RewardFnConfig(**spec))
    assert message in str(info.value)


def test_reward_file_that_fails_to_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import no_such_package_q\n")
    with pytest.raises(RewardError, match=r"bad.py' failed to import: ModuleNotFoundError"):
        check_reward(RewardFnConfig(name="x", path=str(bad)))


# ---- the HTTP service and its client
@pytest.fixture()
def service():
    import threading

    from rlframe.reward.scoring import RewardSet
    from rlframe.reward.server import make_server

    specs = [RewardFnConfig(name="trl_no_kwargs", path=HERE, weight=0.5),
             RewardFnConfig(name="comp", path=HERE, function="batch_dicts", weight=1.0),
             RewardFnConfig(name="trl_skip", path=HERE, weight=2.0)]
    server = make_server(RewardSet(specs), port=0, token="s3cret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_reward_through_the_service(service):
    r = PluginReward(RewardFnConfig(name="comp", url=service, token="s3cret"))
    out = r(SAMPLES)
    assert out["comp"] == [0.0, 1.0, 2.0]                     # the service's component of the same name
    assert out["comp/comp/double"] == [0.0, 2.0, 4.0]
    assert out["comp/trl_no_kwargs"] == [26.0, 24.0, 9.0]
    total = PluginReward(RewardFnConfig(name="remote_total", url=service, token="s3cret"))(SAMPLES)
    assert total["remote_total"] == [15.0, 15.0, 6.5]          # 0.5 * len + 1.0 * comp + 2.0 * skip (s2: skipped)
    skip = out["comp/trl_skip"]
    assert skip[:2] == [1.0, 1.0] and skip[2] != skip[2]      # TRL's None crossed the wire (JSON null) as a skip
    req = urllib.request.Request(service + "/score", data=json.dumps({"samples": SAMPLES}).encode(), method="POST",
                                 headers={"Authorization": "Bearer s3cret"})
    with urllib.request.urlopen(req) as resp:                 # strict JSON: null, not NaN
        assert json.loads(resp.read(), parse_constant=pytest.fail)["components"]["trl_skip"] == [1.0, 1.0, None]


def trl_skip(prompts, completions, n, **kwargs):
    return [None if i == 2 else 1.0 for i in n]


def test_service_refuses_a_wrong_token_and_bad_bodies(service):
    with pytest.raises(RewardError, match=r"answered 401: missing or wrong bearer token"):
        PluginReward(RewardFnConfig(name="comp", url=service, token="wrong"))(SAMPLES)
    req = urllib.request.Request(service + "/score", data=b'{"samples": 3}', method="POST",
                                 headers={"Authorization": "Bearer s3cret"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req)
    assert info.value.code == 400 and "'samples' must be a list" in json.loads(info.value.read())["error"]
    with urllib.request.urlopen(urllib.request.Request(service + "/health",
                                                       headers={"Authorization": "Bearer s3cret"})) as resp:
        assert json.loads(resp.read()) == {"status": "ok", "rewards": ["trl_no_kwargs", "comp", "trl_skip"]}


def test_unreachable_service_is_retried_with_backoff_then_named():
    import socket

    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = PluginReward(RewardFnConfig(name="far", url=f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05))
    t0 = time.perf_counter()
    with pytest.raises(RewardError, match=r"reward 'far': cannot reach http://127.0.0.1:\d+/score.*after 3 attempts"):
        r(SAMPLES)
    assert time.perf_counter() - t0 >= 0.05 + 0.1              # backoff 0.05 s, then 0.1 s


def test_service_health_check(service):
    from rlframe.reward.remote import check_service

    assert check_service(RewardFnConfig(name="x", url=service + "/score", token="s3cret")) == \
        ["trl_no_kwargs", "comp", "trl_skip"]
    with pytest.raises(RewardError, match=r"health answered 401"):
        check_service(RewardFnConfig(name="x", url=service, token="bad"))
    with pytest.raises(RewardError, match=r"cannot reach the reward service at http://127.0.0.1:9"):
        check_service(RewardFnConfig(name="x", url="http://127.0.0.1:9"), timeout=2)
