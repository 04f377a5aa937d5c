"""Where inputs come from: seed and gold files (JSONL or CSV), traffic logs, and slice tagging.

Every bad row is reported as a DataError naming the file and the line, so a person can fix it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from distil.errors import DataError
from distil.spec.models import SliceRule, SliceSpec, Spec


@dataclass
class InputItem:
    """One input before the teacher sees it."""

    input: str
    label: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    source: str = "seed"
    timestamp: dt.datetime | None = None
    line: int | None = None  # where it was read from (seed and gold files), for messages


@dataclass(frozen=True)
class Columns:
    """Which column of a seed or gold file holds what: ``data.fields`` and the columns slices read (``from_field``)."""

    input: str = "input"
    label: str = "label"
    tags: tuple[tuple[str, str], ...] = ()  # (column, slice tag it becomes)

    @property
    def mapped(self) -> bool:
        return self.input != "input" or self.label != "label"


DEFAULT_COLUMNS = Columns()


def spec_columns(spec: Spec) -> Columns:
    """The columns the spec's seed and gold files are read with."""
    fields = spec.data.fields
    tags = [(column, column) for column in fields.tags]
    tags += [(sl.from_field, sl.name) for sl in spec.data.slices if sl.from_field]
    return Columns(fields.input, fields.label, tuple(dict.fromkeys(tags)))


def _found(row: dict, most: int = 12) -> str:
    """The row's column names as a person can read them: odd ones quoted, long lists cut."""
    names = [k if isinstance(k, str) and k.isprintable() and len(k) <= 40 else repr(k)[:40] for k in row]
    shown = ", ".join(names[:most]) + (f", … ({len(names)} in all)" if len(names) > most else "")
    return shown or "none"


def _text_column(row: dict, skip: set[str]) -> str | None:
    """The column most likely to hold the input: the one with the longest text."""
    texts = {k: v for k, v in row.items() if isinstance(v, str) and k not in skip and k.isprintable() and len(k) <= 40}
    return max(texts, key=lambda k: len(texts[k])) if texts else None


def _missing_input(row: dict, where: str, columns: Columns) -> DataError:
    likely = _text_column(row, {columns.label, "tags"})
    if columns.input != "input":
        fix = f"data.fields.input is {columns.input!r}; set it to the column that holds the text"
    else:
        fix = "name the column that holds the text in distil.yaml: data.fields: {input: " + (likely or "COLUMN") + "}"
    return DataError(f"{where}: no `{columns.input}` column (columns found: {_found(row)}); {fix}")


def _label_fix(row: dict, columns: Columns) -> str:
    if columns.label in row:
        return "every line of this file needs a label; write one, or delete the line"
    others = [k for k in row if k not in (columns.input, "tags") and k.isprintable() and len(k) <= 40]
    column = others[0] if others else "COLUMN"
    return "name the column that holds the label in distil.yaml: data.fields: {label: " + column + "}"


def _item(
    row: object, where: str, labels: list[str] | None, need_label: bool, columns: Columns = DEFAULT_COLUMNS
) -> InputItem:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with an `{columns.input}` field, got {type(row).__name__}")
    if columns.input not in row:
        raise _missing_input(row, where, columns)
    text = row.get(columns.input)
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: `{columns.input}` must be text, got {type(text).__name__}")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: `{columns.input}` is empty; write the input's text there, or delete the line")
    label = row.get(columns.label)
    if label in ("", None):
        label = None
    elif not isinstance(label, str):
        raise DataError(f"{where}: `{columns.label}` must be a string, got {label!r}")
    elif labels is not None and label not in labels:
        raise DataError(
            f"{where}: label {label!r} is not one of task.labels ({', '.join(labels)}); correct the line (column "
            f"`{columns.label}`), or add the label to task.labels"
        )
    if need_label and label is None:
        raise DataError(
            f"{where}: no label in column `{columns.label}` (columns found: {_found(row)}); {_label_fix(row, columns)}"
        )
    tags = row.get("tags") or {}
    if isinstance(tags, str):
        try:
            tags = json.loads(tags) if tags.strip() else {}
        except json.JSONDecodeError:
            raise DataError(f"{where}: `tags` is not a JSON object: {tags[:60]!r}") from None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise DataError(f"{where}: `tags` must map slice names to string values")
    tags = dict(tags)
    for column, name in columns.tags:
        value = row.get(column)
        if value in ("", None):
            raise DataError(
                f"{where}: no value in column `{column}` (columns found: {_found(row)}), which slice {name!r} reads; "
                f"give every line one, or fix data.slices / data.fields.tags"
            )
        if isinstance(value, (dict, list)):
            raise DataError(f"{where}: column `{column}` must hold a plain value for slice {name!r}, got {value!r}")
        tags[name] = str(value)
    return InputItem(text.strip(), label, tags)


def read_inputs(
    path: str | Path,
    labels: list[str] | None = None,
    need_label: bool = False,
    source: str = "seed",
    columns: Columns = DEFAULT_COLUMNS,
) -> list[InputItem]:
    """Read a JSONL or CSV file of inputs (``input``; optional ``label``, ``tags``; other names through
    ``columns``); a file with none is refused."""
    path = Path(path)
    require_regular_file(path, hint="check data.seeds / data.gold in distil.yaml")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.suffix.lower() == ".csv":
                rows = [(row, where) for row, where in _csv_rows(f, path, labels, columns)]
            else:
                rows = [
                    (_json_line(line, f"{path}:{number}"), f"{path}:{number}")
                    for number, line in enumerate(f, start=1)
                    if line.strip()
                ]
            items = []
            for row, where in rows:
                item = _item(row, where, labels, need_label, columns)
                item.line = int(where.rsplit(":", 1)[1])
                items.append(item)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if not items:
        raise DataError(
            f"{path}: the file has no items (it is empty, blank or a header alone)",
            hint="add one line per input, or point data.seeds / data.gold in distil.yaml at the right file",
        )
    for item in items:
        item.source = source
    return items


def read_seed_inputs(path: str | Path, spec: Spec) -> list[InputItem]:
    """The seeds, read with the spec's columns; for a classify task a given label must be one of ``task.labels``."""
    labels = spec.task.label_names if spec.task.kind == "classify" else None
    return read_inputs(path, labels=labels, columns=spec_columns(spec))


def read_gold_inputs(path: str | Path, spec: Spec) -> list[InputItem]:
    """The gold set: every line labelled, and for a classify task with one of ``task.labels`` (a line with
    another label would be scored as a miss for every model, silently)."""
    task = spec.task
    return read_inputs(
        path,
        labels=task.label_names if task.kind == "classify" else None,
        need_label=True,
        source="gold",
        columns=spec_columns(spec),
    )


def require_regular_file(path: Path, hint: str | None = None) -> None:
    """DataError unless ``path`` is a regular file (a symlink to one is fine): a device such as /dev/zero
    never ends and a FIFO blocks until someone writes to it, so neither is read."""
    if not path.exists():
        gone = f" (a symlink to {os.readlink(path)})" if path.is_symlink() else ""
        raise DataError(f"{path}: file not found{gone}", hint=hint)
    if not stat.S_ISREG(path.stat().st_mode):
        kind = "a folder" if path.is_dir() else "a device, FIFO or socket"
        raise DataError(f"{path}: not a regular file ({kind}); give a JSONL or CSV file", hint=hint)


def _json_line(line: str, where: str) -> object:
    """One JSONL line parsed; every way it can fail is a DataError naming ``where``."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise DataError(f"{where}: not a usable JSON line ({str(exc).split(';')[0]})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read; an input is one object with text fields") from None


def _csv_rows(
    f: TextIO, path: Path, labels: list[str] | None, columns: Columns = DEFAULT_COLUMNS
) -> Iterator[tuple[dict[str, str | None], str]]:
    """(row as a dict, "path:line") per data row of a CSV. ``strict`` refuses a quote left open at the end of
    the file; a row read across several lines is refused when it looks like rows merged by a stray quote."""
    reader = csv.reader(f, strict=True)
    end = 0  # the line the last complete row ended on
    try:
        header = next(reader, None)
        if not header or columns.input not in header:
            raise _missing_input(dict.fromkeys(header or []), f"{path}:1", columns)
        end = reader.line_num
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells:
                continue
            if end > start:
                _refuse_merged_rows(cells, header, labels, f"{path}:{start}", end, columns.label)
            yield {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header)}, f"{path}:{start}"
    except csv.Error as exc:
        problem = (
            f"a field is longer than {csv.field_size_limit():,} characters"
            if "field limit" in str(exc)
            else f"malformed CSV ({exc})"
        )
        raise DataError(
            f"{path}:{end + 1}: {problem} in the row that starts here; is a quote opened and never closed?"
        ) from None


def _refuse_merged_rows(
    cells: list[str], header: list[str], labels: list[str] | None, where: str, end: int, label_column: str = "label"
) -> None:
    """A quoted field may hold line breaks; rows merged by an unbalanced quote show themselves by missing
    columns, or by a line inside the field that reads as a whole row of its own (ending in a known label)."""
    if len(cells) < len(header):
        raise DataError(
            f"{where}: a quoted field runs to line {end} and the row has {len(cells)} of {len(header)} columns; "
            "is a quote unbalanced?"
        )
    label_at = header.index(label_column) if label_column in header else None
    if labels is None or label_at is None or len(header) < 2:
        return
    for cell in cells:
        for line in cell.splitlines():
            inner = next(csv.reader([line]), [])
            if len(inner) == len(header) and inner[label_at] in labels:
                raise DataError(
                    f"{where}: lines up to {end} were read as one row, but {line[:60]!r} inside it reads as a row "
                    "of its own; is a quote unbalanced?"
                )


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
    require_regular_file(path)
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
        row = _json_line(line, where)
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


def matching_value(spec: SliceSpec, text: str) -> str | None:
    """The first value whose rule matches ``text``, or None (a ``{}`` value matches nothing)."""
    return next((value for value, rule in spec.values.items() if _rule_matches(rule, text)), None)


def slice_value(spec: SliceSpec, text: str) -> str:
    """The value the rules give ``text``: the first matching rule, else the slice's fallback (default, catch-all)."""
    return matching_value(spec, text) or spec.fallback


def tag_slices(text: str, slices: list[SliceSpec], given: dict[str, str] | None = None) -> dict[str, str]:
    """Slice tags for ``text``: a tag the item already carries wins (its file's, or inherited from the seeds a
    teacher-written input was written from), then the first matching rule, then the fallback."""
    tags = dict(given or {})
    for spec in slices:
        if spec.name not in tags:
            tags[spec.name] = slice_value(spec, text)
    return tags


def shared_tags(items: Sequence[InputItem], slices: list[SliceSpec]) -> dict[str, str]:
    """The slice values every one of ``items`` has (their carried tags, else their rules'): what an input written
    from them inherits."""
    if not items:
        return {}
    tagged = [tag_slices(item.input, slices, item.tags) for item in items]
    return {sl.name: tagged[0][sl.name] for sl in slices if len({t[sl.name] for t in tagged}) == 1}
