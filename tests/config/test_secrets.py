"""Secrets stay out of config.yaml, trackers, logs and error messages; printing a config runs no user code."""
from __future__ import annotations

import logging
from pathlib import Path

from rlframe.cli import main
from rlframe.config import load_config, to_dict, to_yaml
from rlframe.config.secrets import MASK, ScrubFilter, redact, remember, scrub

TOKEN = "tok-3f9a8c1d"
REMOTE = f'reward.fns=[{{name: judge, url: "http://127.0.0.1:9", token: {TOKEN}, kwargs: {{api_key: sk-abcdef12}}}}]'


def test_redact_masks_secret_keys_at_any_depth():
    out = redact({"a": {"token": "xyz12345", "wandb_api_key": "k1234567", "max_new_tokens": 64,
                        "list": [{"password": "hunter22"}]}, "tokenizer": "keep"})
    assert out == {"a": {"token": MASK, "wandb_api_key": MASK, "max_new_tokens": 64, "list": [{"password": MASK}]},
                   "tokenizer": "keep"}
    assert scrub("sent xyz12345 and k1234567") == f"sent {MASK} and {MASK}"


def test_config_yaml_and_tracker_config_hold_no_token():
    cfg = load_config([REMOTE], import_rewards=False)
    assert cfg.reward.fns[0].token == TOKEN            # the run itself still has it
    text = to_yaml(cfg)
    assert TOKEN not in text and "sk-abcdef12" not in text and f"token: '{MASK}'" in text
    assert TOKEN not in str(to_dict(cfg)) and TOKEN not in repr(cfg)


def test_log_records_and_error_messages_are_scrubbed(caplog, monkeypatch):
    monkeypatch.setenv("RLFRAME_REWARD_TOKEN", "env-secret-77")
    remember(TOKEN)
    log = logging.getLogger("rlframe.test_secrets")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())
    handler.addFilter(ScrubFilter())
    log.addHandler(handler)
    try:
        log.warning("calling %s with %s", TOKEN, "env-secret-77")
        log.warning("Authorization: Bearer abc.def.ghi")
    finally:
        log.removeHandler(handler)
    assert seen == [f"calling {MASK} with {MASK}", f"Authorization: Bearer {MASK}"]
    assert scrub("bad override reward.fns=[{token: qwerty99}]") == f"bad override reward.fns=[{{token: {MASK}}}]"


def test_cfg_job_masks_the_token_and_never_imports_reward_files(tmp_path: Path, capsys):
    marker = tmp_path / "imported"
    rewards = tmp_path / "side_effect.py"
    rewards.write_text(f"open({str(marker)!r}, 'w').write('ran')\n\ndef r(samples):\n    return [0.0] * len(samples)\n")
    fns = f'reward.fns=[{{name: r, path: {rewards}}}, {{name: judge, url: "http://127.0.0.1:9", token: {TOKEN}}}]'
    assert main(["train", "--cfg", "job", fns]) == 0
    out = capsys.readouterr().out
    assert not marker.exists(), "--cfg job executed a reward file"
    assert TOKEN not in out and f"token: '{MASK}'" in out
    # a real start (here stopped by another invalid key, before Ray) does import it, to check it early
    assert main(["train", "trainer.max_steps=-1", fns]) == 2
    assert marker.exists()
    assert TOKEN not in capsys.readouterr().err
