"""Load PreferImg / PreferThinker records (JSON list or JSONL) and check them before anything expensive.

Field names are the public data's, spelling included (PreferThinker's public release): ``user_id``, ``imageA``,
``imageB``, ``prefered_images``, ``non_prefered_images``, ``reference_prompt_list`` (optional),
``prefer_attributes``, ``non_prefer_attributes`` (a dict of the five dimensions or a string) and
``conversations`` (``[{"value": question}, ..., {"value": "...<answer>Image X</answer>"}]``). Image paths
are relative to an image root (default: the data file's folder).

Every record is checked first (fields, types, images exist and decode, answer, profile keys), so that a
broken data set fails in seconds with the file, the line (JSONL) or record index (JSON), the field and what
was expected, not hours into a run. ``on_invalid="skip"`` drops bad records instead and reports them.
Pure Python + PIL: no Ray, DeepSpeed or torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlframe.errors import ConfigError
from rlframe.tasks.preference.parser import canonical_dimension, normalize_answer, parse_profile
from rlframe.tasks.preference.vocab import DIMENSIONS

REQUIRED = ("user_id", "imageA", "imageB", "prefered_images", "non_prefered_images", "prefer_attributes",
            "non_prefer_attributes", "conversations")
ON_INVALID = ("error", "skip")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_COT_TAGS = ("<think>", "<visual preference profile>")


class RecordError(ConfigError):
    """A data record that cannot be used; the message names the file, line or index, field and expectation."""


@dataclass
class LoadResult:
    """Normalized records, and how many were skipped and why (``on_invalid="skip"``)."""
    records: list[dict[str, Any]]
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)
    path: str = ""

    def summary(self) -> str:
        return f"{self.path}: {len(self.records)} records loaded, {self.skipped} skipped"


class _Bad(Exception):
    def __init__(self, field_name: str, expected: str) -> None:
        super().__init__(f"field {field_name!r}: {expected}")


def _read(path: Path) -> list[tuple[str, Any]]:
    """(location, parsed record or a _Bad) per record; location is ``line N`` (JSONL) or ``record index N``.

    Bytes that are not UTF-8, nesting too deep for the JSON parser and numbers too long to convert are bad
    records like any other (named by line), not tracebacks."""
    raw = path.read_bytes()
    # a JSON list, unless it does not parse and has several lines: then JSONL whose first line is broken
    if raw.lstrip().startswith(b"[") and not (_json_fails(raw) and len(raw.strip().splitlines()) > 1):
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise RecordError(f"{path}: line {line}: not UTF-8 text (byte {err.start})") from None
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
        except (ValueError, RecursionError) as err:
            raise RecordError(f"{path}: not usable JSON: {type(err).__name__}: {str(err)[:200]}") from None
        return [(f"record index {i}", rec) for i, rec in enumerate(data)]
    out: list[tuple[str, Any]] = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"line {n}", json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as err:
            out.append((f"line {n}", _Bad("<json>", f"expected UTF-8 text (bad byte at column {err.start + 1})")))
        except json.JSONDecodeError as err:
            out.append((f"line {n}", _Bad("<json>", f"expected one JSON object per line ({err.msg})")))
        except (ValueError, RecursionError) as err:
            out.append((f"line {n}", _Bad("<json>", f"not usable JSON ({type(err).__name__}: {str(err)[:120]})")))
    return out


def _json_fails(raw: bytes) -> bool:
    try:
        json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return True
    return False


def _profile(rec: dict, name: str) -> dict[str, str]:
    """A profile given as a dict (values: a string or a list of strings) or a string, as a dict over the five
    dimensions in order."""
    raw = rec[name]
    expected = f"expected a dict or string with exactly the keys {list(DIMENSIONS)}"
    if isinstance(raw, str):
        prof, problems = parse_profile(raw)
        if problems:
            raise _Bad(name, f"{expected}; {'; '.join(problems)}")
    elif isinstance(raw, dict):
        prof = {}
        for k, v in raw.items():
            key = canonical_dimension(str(k))
            if key is None:
                raise _Bad(name, f"{expected}; unknown key {k!r}")
            if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                v = ", ".join(x.strip() for x in v)
            if not isinstance(v, str) or not v.strip():
                raise _Bad(name, f"{expected}; the value of {k!r} must be a non-empty string, got {v!r}")
            prof[key] = v.strip()
    else:
        raise _Bad(name, f"{expected}, got {type(raw).__name__}")
    missing = [d for d in DIMENSIONS if d not in prof]
    if missing:
        raise _Bad(name, f"{expected}; missing {missing}")
    return {d: prof[d] for d in DIMENSIONS}


def _answer_and_target(rec: dict) -> tuple[str, str, str | None]:
    conv = rec["conversations"]
    if (not isinstance(conv, list) or len(conv) < 2
            or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in conv)):
        raise _Bad("conversations", 'expected a list of at least two {"value": str} turns (question, answer)')
    last = conv[-1]["value"]
    found = _ANSWER_RE.findall(last)
    canon = {"image a": "Image A", "image b": "Image B"}.get(normalize_answer(found[-1])) if found else None
    if canon is None:
        got = repr(found[-1]) if found else f"no <answer> tag in {last[:80]!r}"
        raise _Bad("conversations[-1].value", f"expected '<answer>Image A</answer>' or "
                                               f"'<answer>Image B</answer>', got {got}")
    target = last if any(t in last for t in _COT_TAGS) else None
    return canon, conv[0]["value"], target


class _ImageChecker:
    """Existence and decodability of image files, each checked once (references repeat across samples)."""

    def __init__(self, root: Path, verify: bool) -> None:
        self.root, self.verify, self.seen = root, verify, {}

    def __call__(self, field_name: str, rel: Any) -> str:
        if not isinstance(rel, str) or not rel:
            raise _Bad(field_name, f"expected an image path (a non-empty string), got {rel!r:.80}")
        try:
            path = (self.root / rel).resolve()
            if path not in self.seen:
                self.seen[path] = self._problem(path)
        except (OSError, ValueError) as err:   # NUL bytes, names too long, ...
            raise _Bad(field_name, f"expected an image path, got {rel!r:.80} ({type(err).__name__}: {err})") from None
        if self.seen[path]:
            raise _Bad(field_name, f"expected a readable image at {rel!r} under {self.root}: {self.seen[path]}")
        return str(path)

    def _problem(self, path: Path) -> str:
        if not path.is_file():
            return "file not found"
        if not self.verify:
            return ""
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as err:  # PIL raises many types for corrupt files
            return f"cannot decode ({type(err).__name__}: {err})"
        return ""


def _image_list(rec: dict, name: str, k: int, check: _ImageChecker) -> list[str]:
    v = rec[name]
    if not isinstance(v, list) or not v:
        raise _Bad(name, f"expected a non-empty list of image paths, got {v!r:.80}")
    return [check(f"{name}[{i}]", p) for i, p in enumerate(v[:k])]


def normalize_record(rec: Any, num_history: int, check: _ImageChecker, default_id: str) -> dict[str, Any]:
    """One record checked and normalized; raises _Bad naming the field and what was expected."""
    if isinstance(rec, _Bad):
        raise rec
    if not isinstance(rec, dict):
        raise _Bad("<record>", f"expected a JSON object, got {type(rec).__name__}")
    missing = [f for f in REQUIRED if f not in rec]
    if missing:
        raise _Bad(missing[0], f"missing (required fields: {', '.join(REQUIRED)})")
    if not isinstance(rec["user_id"], (str, int)):
        raise _Bad("user_id", f"expected a string or integer, got {rec['user_id']!r}")
    answer, question, target = _answer_and_target(rec)
    prefer, non_prefer = _profile(rec, "prefer_attributes"), _profile(rec, "non_prefer_attributes")
    liked = _image_list(rec, "prefered_images", num_history, check)
    disliked = _image_list(rec, "non_prefered_images", num_history, check)
    image_a, image_b = check("imageA", rec["imageA"]), check("imageB", rec["imageB"])
    prompts = rec.get("reference_prompt_list", [])
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise _Bad("reference_prompt_list", "expected a list of strings")
    n_pos = len(rec["prefered_images"])
    if len(prompts) == n_pos + len(rec["non_prefered_images"]):  # one prompt per reference: keep them aligned
        prompts = prompts[:len(liked)] + prompts[n_pos:n_pos + len(disliked)]
    out = dict(rec)
    out.update({
        "id": str(rec.get("id", default_id)),
        "user_id": str(rec["user_id"]),
        "prefered_images": list(rec["prefered_images"][:len(liked)]),
        "non_prefered_images": list(rec["non_prefered_images"][:len(disliked)]),
        "reference_prompt_list": prompts,
        "prefer_attributes": prefer,
        "non_prefer_attributes": non_prefer,
        # the paper's order: preferred references, non-preferred references, Image A, Image B
        "images": liked + disliked + [image_a, image_b],
        "num_prefered": len(liked),
        "num_non_prefered": len(disliked),
        "question": question,
        "answer": answer,
        "target": target,
        "raw": rec,
    })
    return out


def load_preferimg(path: str | Path, image_root: str | Path | None = None, num_history: int = 5,
                   on_invalid: str = "error", verify_images: bool = True) -> LoadResult:
    """Read, check and normalize a PreferImg / PreferThinker file.

    Keeps the first ``num_history`` liked and disliked references of each record. ``on_invalid="error"``
    raises :class:`RecordError` at the first bad record; ``"skip"`` drops bad records and lists why in the
    result. ``verify_images=False`` checks existence only (PIL ``verify`` reads every file once).
    """
    path = Path(path)
    if on_invalid not in ON_INVALID:
        raise ConfigError(f"on_invalid={on_invalid!r}: expected one of {', '.join(map(repr, ON_INVALID))}")
    if num_history < 1:
        raise ConfigError(f"num_history={num_history!r}: must be >= 1")
    if not path.is_file():
        raise RecordError(f"{path}: data file not found")
    root = Path(image_root) if image_root is not None else path.parent
    if not root.is_dir():
        raise RecordError(f"{path}: image root {root} is not a folder")
    check = _ImageChecker(root, verify_images)
    result = LoadResult(records=[], path=str(path))
    records = _read(path)
    if not records:
        raise RecordError(f"{path}: no records (expected a JSON list of objects or one JSON object per line)")
    for i, (where, rec) in enumerate(records):
        try:
            result.records.append(normalize_record(rec, num_history, check, f"{path.stem}-{i}"))
        except _Bad as bad:
            msg = f"{path}: {where}: {bad}"
            if on_invalid == "error":
                raise RecordError(msg) from None
            result.skipped += 1
            result.reasons.append(msg)
    return result
