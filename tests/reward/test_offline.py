"""`rlframe reward test`: offline scoring of dumped rollouts or of the task's own targets, with failures named."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from rlframe.cli import main
from rlframe.data.rollout_batch import Completion, RolloutBatch
from rlframe.tracking import write_jsonl

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "rewards" / "trl_style.py")
FNS = f"reward.fns=[{{name:answer_match,path:{EXAMPLE}}},{{name:think_format,path:{EXAMPLE},weight:0.2}}]"


def dumped(tmp_path: Path, texts: list[str]) -> Path:
    """A rollout dump as trainer.dump_rollouts writes it (RolloutBatch.dump_rows)."""
    msgs = [{"role": "user", "content": "Which image?"}]
    recs = [{"id": f"r{i}", "prompt": "Which image?", "messages": msgs, "answer": "Image A"} for i in range(2)]
    rb = RolloutBatch(recs, [[1], [1]], 2, step=7)
    rb.add(Completion(i // 2, [5, 6], [-0.5, -0.5], text=t, sample_index=i % 2, weight_version=3)
           for i, t in enumerate(texts))
    rb.set_scores(range(4), {"answer_match": [1.0, 0.0, 1.0, 0.0]})
    rb.rewards = [1.0, 0.0, 1.0, 0.0]
    rb.advantages = torch.tensor([0.7, -0.7, 0.7, -0.7])
    rows = rb.dump_rows(3)
    assert [r["sample_index"] for r in rows] == [0, 1, 1] and [r["id"] for r in rows] == ["r0", "r0", "r1"]
    assert rows[0]["rewards"] == {"answer_match": 1.0} and rows[0]["advantage"] == 0.699999988079071
    assert rows[0]["weight_version"] == 3 and rows[0]["step"] == rows[0]["global_step"] == 7
    write_jsonl(tmp_path / "step-000007.jsonl", rows)
    return tmp_path / "step-000007.jsonl"


def test_replays_a_dump_and_reports_each_component(tmp_path, capsys):
    good = "<think>t</think><answer>Image A</answer>"
    path = dumped(tmp_path, [good, "<answer>Image B</answer>", "no", good])
    assert main(["reward", "test", "--rollouts", str(path), FNS]) == 0
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    assert table["answer_match"][:4] == ["0.6667", "0.4714", "0.0000", "1.0000"]   # slots 0, 1 (B), 3
    assert table["think_format"][0] == "0.6667" and table["answer_match"][4] == "0"


def test_a_failing_reward_names_the_sample_and_exits_1(tmp_path, capsys):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"id": "mine-1", "completion": "<answer>Image A</answer>", "answer": "Image A"}) + "\n")
    # plain records are not conversational: a function indexing completion[0]["content"] fails on them
    assert main(["reward", "test", "--rollouts", str(path), FNS]) == 1
    out = capsys.readouterr().out
    assert "reward 'answer_match' raised on sample 'mine-1': TypeError" in out
    forced = f"reward.fns=[{{name:answer_match,path:{EXAMPLE},style:trl_conversational}}]"
    assert main(["reward", "test", "--rollouts", str(path), forced]) == 0


def test_bad_input_is_named(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"completion": "x"}\n{"text": "y"}\n')
    assert main(["reward", "test", "--rollouts", str(path), FNS]) == 2
    assert "bad.jsonl: line 2: expected an object with a string 'completion' field" in capsys.readouterr().err
    assert main(["reward", "test", "--rollouts", str(tmp_path / "nope.jsonl"), FNS]) == 2
    assert main(["reward", "test", "--rollouts", str(path), "reward.fns=[{name:x,path:/no/such.py}]"]) == 2
    assert "/no/such.py" in capsys.readouterr().err


def test_targets_score_the_tasks_reference_answers(capsys):
    assert main(["reward", "test", "--targets", "--limit", "16", FNS, "data.num_train=16", "data.num_eval=4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("16 samples") and " 1.0000 " in out.splitlines()[3]
