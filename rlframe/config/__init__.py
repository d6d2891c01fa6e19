"""Configuration: Hydra composition of `conf/` over dataclass schemas, then validation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from rlframe.config.schema import RLConfig
from rlframe.errors import ConfigError

__all__ = ["RLConfig", "ConfigError", "CONF_DIR", "compose", "load_config", "config_groups", "to_yaml", "to_dict"]

CONF_DIR = Path(os.environ.get("RLFRAME_CONF_DIR", Path(__file__).resolve().parents[2] / "conf"))
_GROUPS = ("model", "data", "rollout", "reward", "algorithm", "learner", "cluster", "trainer", "experiment")


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="rlframe_base", node=RLConfig)


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose conf/<config_name>.yaml with Hydra overrides; errors name the key."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not CONF_DIR.is_dir():
        raise ConfigError(f"config folder not found: {CONF_DIR} (set RLFRAME_CONF_DIR)")
    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, KeyError) as err:
        # Hydra raises plain ValueErrors too (e.g. for the override `=0`): every one is a bad command line
        raise ConfigError(f"invalid configuration: {_explain(err)}") from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


_NOISE = ("$VALUE", "reference_type=", "object_type=", "invalid literal for")


def _explain(err: Exception) -> str:
    """Hydra wraps OmegaConf's message (which names the full key) in its own; keep both short."""
    parts, seen = [], set()
    cur: BaseException | None = err
    while cur is not None:
        msg = "\n".join(line for line in str(cur).strip().splitlines()
                        if not any(x in line for x in _NOISE))
        if msg and msg not in seen:
            seen.add(msg)
            parts.append(msg)
        cur = cur.__cause__ or cur.__context__
    return "\n  ".join(parts)


def load_config(overrides: Sequence[str] = (), import_rewards: bool = True) -> RLConfig:
    """Compose, convert to the typed dataclass tree, and validate values (`import_rewards=False`: without
    importing user reward files, for a config that is only printed)."""
    from rlframe.config.validate import validate   # imports torch: not needed by `rlframe --help`

    from omegaconf.errors import OmegaConfBaseException

    cfg = compose(overrides)
    try:
        OmegaConf.resolve(cfg)
        obj = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, ValueError, TypeError) as err:   # e.g. an interpolation that names no key
        raise ConfigError(f"invalid configuration: {_explain(err)}") from None
    assert isinstance(obj, RLConfig)
    to_dict(obj)   # remembers the config's secrets, so logs and errors mask them from here on
    return validate(obj, import_rewards=import_rewards)


def to_yaml(cfg: RLConfig | DictConfig) -> str:
    """The config as YAML with secrets masked (what config.yaml and `--cfg job` show)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


def to_dict(cfg: RLConfig | DictConfig) -> dict:
    """The config as plain containers with secrets masked (what trackers such as W&B receive)."""
    from rlframe.config.secrets import redact

    node = OmegaConf.structured(cfg) if isinstance(cfg, RLConfig) else cfg
    return redact(OmegaConf.to_container(node, resolve=True))


def config_groups() -> dict[str, list[str]]:
    """The options of each config group, read from conf/ (for --help)."""
    out: dict[str, list[str]] = {}
    for group in _GROUPS:
        d = CONF_DIR / group
        out[group] = sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []
    return out
