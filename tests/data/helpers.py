"""Small projects for data and teacher tests: the triage spec with a tiny random teacher and own seeds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

EXAMPLE = Path(__file__).parents[2] / "examples" / "triage" / "distil.yaml"

SEEDS = [
    ("I was charged twice for my subscription this month.", "billing"),
    ("The app crashes every time I open the settings page.", "technical"),
    ("How do I change the e-mail address on my account?", "account"),
    ("Please refund the extra fee on my last invoice.", "billing"),
    ("The upload button does nothing when I click it.", "technical"),
    ("I want to delete my account and all my data.", "account"),
    ("Why did my card get declined for the yearly plan?", "billing"),
    ("Error 500 when I try to export my reports, urgent!!", "technical"),
    ("hey can't log in to my profile, pls reset my password", "account"),
    ("My invoice shows the wrong company name and VAT number.", "billing"),
    ("The page loads forever and then shows a blank screen.", "technical"),
    ("Can I merge two accounts that use the same e-mail?", "account"),
]


def make_project(
    root: Path, teacher_source: str, seeds=SEEDS, scoring: str = "direct", lock: bool = True, **data_overrides
) -> Path:
    """Write distil.yaml + seeds.jsonl into ``root`` and lock its gate as the sponsor (no teacher is called before;
    ``lock=False`` leaves it unlocked); returns the spec path. ``scoring``: the task's label scoring."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["teachers"][0]["source"] = teacher_source
    spec["task"]["scoring"] = scoring
    spec["data"]["seeds"] = "seeds.jsonl"
    spec["data"]["gold"] = None
    spec["data"]["synthetic_budget"] = 0
    spec["data"].update(data_overrides)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "seeds.jsonl", "w") as f:
        for text, label in seeds:
            f.write(json.dumps({"input": text, "label": label}) + "\n")
    path = root / "distil.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    if lock:
        from distil.spec.gate import lock_gate
        from distil.spec.io import load_project

        lock_gate(load_project(path), spec["roles"]["sponsor"])
    return path
