"""Secrets (reward-service tokens, API keys) kept out of config.yaml, trackers, logs and error messages.

Two nets: by key (any config key that names a secret is written as ``***``) and by value (every secret value
seen in a config or in ``RLFRAME_REWARD_TOKEN`` is replaced by ``***`` in log records and error messages,
wherever it appears). Pure Python.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
SECRET_KEYS = ("token", "api_key", "apikey", "password", "secret", "authorization")
ENV_VARS = ("RLFRAME_REWARD_TOKEN",)
_seen: set[str] = set()


def is_secret_key(key: Any) -> bool:
    k = str(key).lower()
    return k in SECRET_KEYS or k.endswith(tuple("_" + s for s in SECRET_KEYS))


def redact(obj: Any) -> Any:
    """A copy of a config container (dicts, lists) with every secret key's value masked; remembers them."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if is_secret_key(k) and v not in (None, ""):
                remember(v)
                out[k] = MASK
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


def remember(value: Any) -> None:
    """Mask this value wherever it later appears (short values would mask ordinary words: kept out)."""
    if isinstance(value, str) and len(value) >= 4:
        _seen.add(value)


def scrub(text: str) -> str:
    """`text` with every remembered secret (and the token env vars' values) masked."""
    for name in ENV_VARS:
        remember(os.environ.get(name))
    for value in sorted(_seen, key=len, reverse=True):
        text = text.replace(value, MASK)
    # `token: x` / `token=x` / `Bearer x` written inline (e.g. a Hydra override echoed by a parse error)
    text = re.sub(r"(?i)\b(token|api_key|password|secret)(\s*[:=]\s*)(['\"]?)[^\s,'\"}\]]+", rf"\1\2\3{MASK}", text)
    return re.sub(r"(?i)\b(Bearer\s+)[^\s,'\"}\]]+", rf"\1{MASK}", text)


class ScrubFilter(logging.Filter):
    """Masks secrets in every record that passes through the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
