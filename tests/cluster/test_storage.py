"""No shared filesystem assumed: when files are shipped, when a path is checked, and run.storage's rules.
(Shipping itself crosses Ray nodes: tests/integration/test_multinode.py.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlframe.cluster.storage import RunStorage, localize
from rlframe.config import load_config
from rlframe.errors import ConfigError
from rlframe.trainer.driver import Driver


def test_a_path_missing_on_the_actors_node_is_named_with_the_node(tmp_path):
    assert localize(str(tmp_path), "model") == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model /nowhere/qwen: not found on node .*run.storage"):
        localize("/nowhere/qwen", "model")


def test_shipping_only_on_a_cluster_without_run_storage_and_only_for_run_folder_files(tmp_path):
    def storage(address, shared=None):
        return RunStorage(SimpleNamespace(cluster=SimpleNamespace(address=address),
                                          run=SimpleNamespace(storage=shared)), tmp_path / "run")

    assert not storage(None).shipping                       # a private Ray: one machine, one filesystem
    assert not storage("auto", str(tmp_path)).shipping      # run.storage: every node sees the run folder
    on = storage("auto")
    assert on.shipping
    assert on.ship(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")   # not the run's: checked there
    assert on.ship(None) is None


def test_run_storage_must_be_absolute_and_hold_the_run_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"run.storage='shared': expected an absolute path"):
        load_config(["run.storage=shared"])
    with pytest.raises(ConfigError, match=r"run.output_dir=.* is not inside run.storage="):
        load_config([f"run.storage={tmp_path / 'shared'}", f"run.output_dir={tmp_path / 'elsewhere'}"])
    cfg = load_config([f"run.storage={tmp_path}", "run.name=r"])
    assert Driver(cfg).run_dir.parent == tmp_path          # the run folder goes on the shared storage


def test_doctor_probe_of_a_node_names_what_is_not_shared_or_not_writable(tmp_path, monkeypatch):
    from rlframe.cluster.storage import probe_node

    marker = tmp_path / ".rlframe-doctor-1"
    assert "not visible (run.storage is not shared with this node)" in probe_node(str(marker))
    marker.write_text("x")
    assert probe_node(str(marker)) is None
    monkeypatch.setenv("RLFRAME_SCRATCH", str(tmp_path / "scratch"))
    assert probe_node(None) is None and (tmp_path / "scratch").is_dir()
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("RLFRAME_SCRATCH", str(tmp_path / "file" / "sub"))
    assert "($RLFRAME_SCRATCH) not writable" in probe_node(None)
