"""A real multi-node layout on one machine: three Ray nodes with different custom resources (a
`ray.cluster_utils.Cluster`, each node its own raylet), `rlframe train` joining it by `cluster.address` like on a
cluster someone else started, and Ray's own actor table saying which node each role ran on.

No shared filesystem is assumed: the learner node's actors get their own scratch folder ($RLFRAME_SCRATCH, set
on that node only), so its checkpoints and final policy reach the run folder only by being shipped through Ray,
and the run folder's files reach it the same way. The same cluster then resumes from a checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rlframe.tracking import read_metrics

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("multinode")]
ROOT = Path(__file__).resolve().parents[2]
# one node per role, each marked by a custom resource the role's config asks for (the head hosts the rewards)
NODES = {"node_reward": {"num_cpus": 1}, "node_gen": {"num_cpus": 1}, "node_learn": {"num_cpus": 1}}
ROLE_NODE = {"RolloutWorker": "node_gen", "RewardWorker": "node_reward", "LearnerWorker": "node_learn"}
# algorithm=dr_grpo: also its end-to-end run (no KL term: the learner node holds no reference model)
RUN = ["trainer.stages=[grpo]", "algorithm=dr_grpo", "rollout=hf", "learner.world_size=1", "data.num_train=16",
       "data.num_eval=4",
       "trainer.max_steps=2", "trainer.save_every=1", "trainer.prompts_per_step=2", "algorithm.group_size=2", "rollout.max_new_tokens=8",
       "trainer.eval_every=0", "trainer.progress=false", "reward.stream_batch=0", "trainer.loggers=[]",
       "reward.fns=[{name:format,weight:0.5},{name:accuracy,weight:1.0}]",
       "rollout.resources={node_gen: 1}", "reward.resources={node_reward: 1}", "learner.resources={node_learn: 1}"]


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    """The cluster, on this machine's address (not the loopback a private Ray of this session may have set); the
    learner node has its own scratch folder. One cluster for the run and its resume."""
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    scratch = tmp_path_factory.mktemp("learner_node_scratch")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
        names = list(NODES)
        cluster = Cluster(initialize_head=True, head_node_args={**NODES[names[0]], "resources": {names[0]: 4}})
        node_of = {cluster.head_node.node_id: names[0]}
        try:
            for name in names[1:]:
                env = {"RLFRAME_SCRATCH": str(scratch)} if name == "node_learn" else None
                node_of[cluster.add_node(**NODES[name], resources={name: 4}, env_vars=env).node_id] = name
            cluster.wait_for_nodes()
            yield cluster, node_of, scratch
        finally:
            cluster.shutdown()


def train(cluster, run_dir: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = subprocess.Popen([sys.executable, "-m", "rlframe.cli", "train", *RUN, f"cluster.address={cluster.address}",
                             f"run.output_dir={run_dir}", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]:
            p.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    return err


def grpo_rows(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["stage"] == "grpo"]


@pytest.fixture(scope="module")
def first_run(three_nodes, tmp_path_factory):
    cluster, _, _ = three_nodes
    run_dir = tmp_path_factory.mktemp("multinode") / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    doctor = subprocess.run([sys.executable, "-m", "rlframe.cli", "doctor", *RUN, f"cluster.address={cluster.address}",
                             f"run.output_dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0 and "PASS  ray cluster" in doctor.stdout and "3 nodes" in doctor.stdout, doctor.stdout
    assert "PASS  storage" in doctor.stdout and "scratch writable on all 3 nodes" in doctor.stdout, doctor.stdout
    return run_dir, train(cluster, run_dir)


def test_each_role_runs_on_the_node_its_config_names(three_nodes, first_run):
    cluster, node_of, scratch = three_nodes
    run_dir, err = first_run
    assert [r["step"] for r in grpo_rows(run_dir)] == [1, 2]
    import yaml

    algo = yaml.safe_load((run_dir / "config.yaml").read_text())["algorithm"]
    assert (algo["name"], algo["loss_agg"], algo["kl_coef"]) == ("dr_grpo", "seq_mean_token_sum", 0.0)

    actors = cluster.global_state.actor_table(None).values()
    ran = {(a["ActorClassName"], node_of.get(a["Address"]["NodeID"])) for a in actors if a["ActorClassName"] in ROLE_NODE}
    assert ran == set(ROLE_NODE.items()), ran
    # placement.json, written as the actors came up, says the same; per-phase timings are in metrics.jsonl
    placed = json.loads((run_dir / "placement.json").read_text())
    role_node = {"rollout": "node_gen", "reward": "node_reward", "learner": "node_learn"}
    assert {(e["role"], e["rank"], node_of[e["node_id"]]) for e in placed} == {(r, 0, n) for r, n in role_node.items()}
    assert all(e["pid"] > 0 and e["node_ip"] and e["resources"][role_node[e["role"]]] == 1 for e in placed), placed
    assert {"timing/generate", "timing/train", "timing/weight_sync"} <= set(grpo_rows(run_dir)[0])
    # each actor's output gathered into the run folder
    for role in role_node:
        assert (run_dir / "logs" / f"{role}-0.log").read_text().startswith(f"=== {role} 0: pid "), role


def test_learner_files_are_shipped_without_a_shared_filesystem(three_nodes, first_run):
    """The learner wrote only into its node's scratch folder: what is in the run folder was shipped."""
    _, _, scratch = three_nodes
    run_dir, err = first_run
    first, last = sorted((run_dir / "checkpoints").iterdir())
    assert (first.name, last.name) == ("0001-grpo-step000001", "0002-grpo-step000002")
    for ckpt in (first, last):
        assert (ckpt / "learner" / "latest").read_text() == "state"                      # DeepSpeed's own files
        assert list((ckpt / "learner" / "state").glob("*model_states.pt")), ckpt
        assert (ckpt / "policy" / "model.safetensors").is_file() and (ckpt / "COMPLETE").is_file()
    assert (run_dir / "final" / "model.safetensors").is_file()
    assert "shipped through Ray to" in err and f"{run_dir}/final" in err
    learner_log = (run_dir / "logs" / "learner-0.log").read_text()
    assert f"written to {scratch}" in learner_log                                       # where it really wrote
    assert f"model: {run_dir}/init_model shipped from the driver's node" in learner_log  # and read its model
    assert not list(scratch.iterdir())                                                  # every copy cleaned up


def test_resume_from_a_checkpoint_on_the_cluster_continues_exactly(three_nodes, first_run, tmp_path):
    """The run stopped after step 1 (its folder as it was then: the step-1 checkpoint is the newest), resumed
    with trainer.resume=auto: the learner state is shipped back to the learner node, and step 2 is the same."""
    cluster, _, _ = three_nodes
    run_dir, _ = first_run
    resumed = tmp_path / "run"
    shutil.copytree(run_dir, resumed, ignore=shutil.ignore_patterns("0002-*", "final", "summary.json"))
    err = train(cluster, resumed, "trainer.resume=auto")
    assert "resuming from" in err and "0001-grpo-step000001" in err
    rows, whole = grpo_rows(resumed), grpo_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]                                          # nothing logged twice
    for k in ("loss", "reward/total", "response_length"):
        assert abs(rows[1][k] - whole[1][k]) <= 1e-4, (k, rows[1][k], whole[1][k])
    assert "checkpoint: " in (resumed / "logs" / "learner-0.log").read_text()         # shipped to the learner


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process the test started, and every process it started (recorded first), by their pids."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()


def test_ray_job_submit_of_a_two_step_run_with_token_authentication(tmp_path):
    """The README's `ray job submit` form (runtime_env working_dir) against a head started like
    launch/ray_start.sh does (token authentication on, dashboard on 127.0.0.1)."""
    import json
    import secrets
    import shutil
    import tempfile
    import time
    import urllib.error
    import urllib.request

    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port, dash = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")   # Ray's socket paths must stay short
    # the job agent's port too: the default (52365) is taken while another Ray (the session's own) runs here
    head = subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                             f"--dashboard-agent-listen-port={_free_port()}", "--dashboard-host=127.0.0.1",
                             "--num-cpus=4", f"--temp-dir={temp}", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url, t0 = f"http://127.0.0.1:{dash}", time.time()
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}/api/version", headers={
                    "Authorization": f"Bearer {token}"}), timeout=5).close()
                break
            except (urllib.error.URLError, OSError):
                assert time.time() - t0 < 180 and head.poll() is None, "the Ray head did not come up"
                time.sleep(2)
        with pytest.raises(urllib.error.HTTPError) as refused:   # no token, no job
            urllib.request.urlopen(f"{url}/api/jobs/", timeout=5)
        assert refused.value.code in (401, 403)
        for _ in range(6):   # the head answers before its job agent is up ("No available agent"): ask again
            out = subprocess.run([ray_bin, "job", "submit", "--address", url, "--runtime-env-json",
                                  json.dumps({"working_dir": str(ROOT)}), "--", sys.executable, "-m", "rlframe.cli",
                                  "train", *RUN[:-3], "cluster=ray_cluster", f"run.output_dir={tmp_path / 'run'}"],
                                 env=env, capture_output=True, text=True, timeout=540)
            if "No available agent" not in out.stderr:
                break
            time.sleep(5)
        assert out.returncode == 0 and "succeeded" in out.stdout, (out.stdout + out.stderr)[-3000:]
        rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
        assert [r["step"] for r in rows if r["stage"] == "grpo"] == [1, 2]
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)
