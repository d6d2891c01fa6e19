"""The launch files work as written: shell syntax, the KubeRay manifest parses, mounts a volume for the run
folder and runs the README's command, and no multi-node launch turns Ray's token authentication off."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "launch").iterdir() if p.suffix in (".sh", ".sbatch"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_passes_bash_n(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_rayjob_mounts_outputs_and_runs_the_readmes_command():
    docs = list(yaml.safe_load_all((ROOT / "launch" / "kuberay.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    entry = job["spec"]["entrypoint"]
    assert entry in (ROOT / "README.md").read_text().splitlines()   # a whole line of the README, as it is
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    output_dir = next(a.split("=", 1)[1] for a in entry.split() if a.startswith("run.output_dir="))
    for pod in pods:
        (c,) = pod["containers"]
        mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "outputs")
        assert (Path(c["workingDir"]) / output_dir).is_relative_to(mount)            # the run folder is on it
        assert any(v["name"] == "outputs" and v["persistentVolumeClaim"]["claimName"] == claim for v in pod["volumes"])
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert {e["name"] for e in submitter["env"]} == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}


def test_no_multi_node_launch_turns_authentication_off():
    for path in SCRIPTS + [ROOT / "launch" / "kuberay.yaml"]:
        text = path.read_text()
        assert "disabled" not in text, path.name
        if path.name != "install.sh":
            assert "RAY_AUTH_MODE=token" in text or "{name: RAY_AUTH_MODE, value: token}" in text, path.name


def test_slurm_waits_for_its_nodes_instead_of_sleeping():
    text = (ROOT / "launch" / "slurm.sbatch").read_text()
    assert "sleep 10" not in text and 'wait_for_nodes "${#nodes[@]}"' in text and "RLFRAME_NODES_TIMEOUT_S" in text
