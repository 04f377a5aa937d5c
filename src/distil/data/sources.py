"""Where inputs come from: seed and gold files (JSONL or CSV), traffic logs, and slice tagging.

Every bad row is reported as a DataError naming the file and the line, so a person can fix it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from distil.errors import DataError
from distil.spec.models import SliceRule, SliceSpec


@dataclass
class InputItem:
    """One input before the teacher sees it."""

    input: str
    label: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    source: str = "seed"
    timestamp: dt.datetime | None = None


def _item(row: object, where: str, labels: list[str] | None, need_label: bool) -> InputItem:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with an `input` field, got {type(row).__name__}")
    text = row.get("input")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: `input` is missing or empty")
    label = row.get("label")
    if label in ("", None):
        label = None
    elif not isinstance(label, str):
        raise DataError(f"{where}: `label` must be a string, got {label!r}")
    elif labels is not None and label not in labels:
        raise DataError(f"{where}: label {label!r} is not one of task.labels ({', '.join(labels)})")
    if need_label and label is None:
        raise DataError(f"{where}: `label` is required in this file")
    tags = row.get("tags") or {}
    if isinstance(tags, str):
        try:
            tags = json.loads(tags) if tags.strip() else {}
        except json.JSONDecodeError:
            raise DataError(f"{where}: `tags` is not a JSON object: {tags[:60]!r}") from None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise DataError(f"{where}: `tags` must map slice names to string values")
    return InputItem(text.strip(), label, dict(tags))


def read_inputs(path: str | Path, labels: list[str] | None = None, need_label: bool = False, source: str = "seed") -> list[InputItem]:
    """Read a JSONL or CSV file of inputs (``input``; optional ``label``, ``tags``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", hint="check data.seeds / data.gold in distil.yaml")
    items: list[InputItem] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(f)
                if not reader.fieldnames or "input" not in reader.fieldnames:
                    raise DataError(f"{path}:1: a CSV of inputs needs an `input` column (found {', '.join(reader.fieldnames or [])})")
                for row in reader:
                    items.append(_item(row, f"{path}:{reader.line_num}", labels, need_label))
            else:
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                    items.append(_item(row, f"{path}:{number}", labels, need_label))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    for item in items:
        item.source = source
    return items


# --- traffic ---------------------------------------------------------------------------------------


def parse_since(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``2w``, ``30m`` -> timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text or "")
    if not match:
        raise DataError(f"--since {text!r}: expected a number and a unit (m, h, d, w), e.g. 90d")
    unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
    return dt.timedelta(**{unit: int(match.group(1))})


def _timestamp(value: object, where: str) -> dt.datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise DataError(f"{where}: timestamp {value!r} is not a valid epoch time") from None
    if isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"{where}: timestamp {value!r} is not ISO 8601 or epoch seconds") from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    raise DataError(f"{where}: `timestamp` is missing")


def read_traffic(path: str | Path, since: str | None = None, now: dt.datetime | None = None) -> list[InputItem]:
    """Past requests from a JSONL log (``input`` or chat ``messages``, and ``timestamp``) within ``since``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: traffic log not found")
    cutoff = (now or dt.datetime.now(dt.UTC)) - parse_since(since) if since else None
    out: list[InputItem] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        if isinstance(row, dict) and "input" not in row and isinstance(row.get("messages"), list):
            users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            row = {**row, "input": users[-1] if users else None}
        item = _item(row, where, None, False)
        item.label = None  # a traffic log's answers are not labels a person gave
        item.source = "traffic"
        item.timestamp = _timestamp(row.get("timestamp", row.get("ts")), where)
        if cutoff is None or item.timestamp >= cutoff:
            out.append(item)
    return out


# --- slices ----------------------------------------------------------------------------------------


def _rule_matches(rule: SliceRule, text: str) -> bool:
    lowered = text.lower()
    words = len(text.split())
    for keyword in rule.keywords:
        k = keyword.lower()
        if re.search(r"\w", k):
            if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", lowered):
                return True
        elif k in lowered:  # punctuation like "!!" has no word boundaries
            return True
    if rule.min_words is not None and words >= rule.min_words:
        return True
    return rule.max_words is not None and words <= rule.max_words


def slice_value(spec: SliceSpec, text: str) -> str:
    for value, rule in spec.values.items():
        if _rule_matches(rule, text):
            return value
    return spec.default or list(spec.values)[-1]


def tag_slices(text: str, slices: list[SliceSpec], given: dict[str, str] | None = None) -> dict[str, str]:
    """Slice tags for ``text``: a tag the record already carries wins, otherwise the first matching rule."""
    tags = dict(given or {})
    for spec in slices:
        if spec.name not in tags:
            tags[spec.name] = slice_value(spec, text)
    return tags
