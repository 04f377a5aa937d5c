"""The licence registry shipped with distil: what common licences and API terms say about distillation.

``registry.yaml`` (next to this file) holds one entry per licence or set of terms; :func:`registry` loads
and validates it once. :func:`find_licence` resolves a teacher's licence record (``teachers[].licence.id``,
else its ``name``) to an entry, so ``distil check`` can propose ``distillation_permitted`` and list the
duties a student inherits. A proposal is never a review: a named person still reads the terms.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
Permission = Literal["yes", "no", "conditional"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Duty(_Model):
    """Something a student built from the teacher must carry or respect."""

    kind: Literal["notice", "name_prefix", "licence_copy", "use_restrictions"] = Field(
        description="notice: an attribution to display; name_prefix: the model's name must begin with `text`; "
        "licence_copy: pass the terms on; use_restrictions: limits on use that bind the student too."
    )
    text: str = Field(min_length=1, description="The duty in words (for name_prefix: the prefix itself).")
    clause: str = Field(min_length=1, description="Where in the terms the duty comes from.")
    applies_when: str = Field(min_length=1, description="When it applies: distributing, making available, always.")

    def describe(self) -> str:
        if self.kind == "name_prefix":
            return f'the model\'s name must begin with "{self.text}" ({self.clause})'
        return f"{self.text} ({self.clause})"


class Source(_Model):
    url: HttpUrl = Field(description="Where the terms were read.")
    version: str = Field(min_length=1, description="The version or effective date the text itself states.")
    read_on: dt.date = Field(description="When the entry was written from that text.")


class LicenceEntry(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$", description="Registry id, written as teachers[].licence.id.")
    name: str = Field(min_length=1)
    aliases: list[str] = Field(
        default_factory=list, description="Other names a spec may use in teachers[].licence.name."
    )
    kind: Literal["weights", "api_terms"]
    outputs: Permission = Field(description="May another model be trained on this teacher's outputs?")
    weights: Permission | Literal["not_applicable"] = Field(description="May another model be built from its weights?")
    distillation_permitted: Permission = Field(
        description="What distil proposes for teachers[].licence.distillation_permitted."
    )
    conditions: list[str] = Field(default_factory=list, description="What `conditional` depends on.")
    clause: str = Field(min_length=1, description="The clause the answer comes from, quoted short or cited by section.")
    duties: list[Duty] = Field(default_factory=list)
    notes: str = ""
    source: Source
    review_required: bool = Field(
        description="True where the reading is less certain; a reviewer should read the clause."
    )

    @model_validator(mode="after")
    def _conditions_for_conditional(self) -> LicenceEntry:
        if self.distillation_permitted == "conditional" and not self.conditions:
            raise ValueError(f"licence {self.id}: distillation_permitted is conditional but no conditions are listed")
        return self

    @property
    def name_prefix(self) -> str | None:
        return next((d.text for d in self.duties if d.kind == "name_prefix"), None)


class Registry(_Model):
    licences: list[LicenceEntry] = Field(min_length=1)

    @field_validator("licences")
    @classmethod
    def _unique_names(cls, value: list[LicenceEntry]) -> list[LicenceEntry]:
        seen: dict[str, str] = {}
        for entry in value:
            for key in (entry.id, entry.name, *entry.aliases):
                folded = _fold(key)
                if folded in seen and seen[folded] != entry.id:
                    raise ValueError(f"licence name {key!r} belongs to both {seen[folded]} and {entry.id}")
                seen[folded] = entry.id
        return value


def _fold(name: str) -> str:
    return " ".join(name.casefold().replace("_", " ").split())


def load_registry(path: str | Path = REGISTRY_FILE) -> Registry:
    return Registry.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


@functools.cache
def registry() -> Registry:
    """The shipped registry, loaded once."""
    return load_registry()


def find_licence(licence_id: str = "", name: str = "") -> LicenceEntry | None:
    """The registry entry for an id (exact) or, without one, a name or alias (case and spacing ignored)."""
    entries = registry().licences
    if licence_id.strip():
        return next((e for e in entries if e.id == licence_id.strip()), None)
    folded = _fold(name)
    if not folded:
        return None
    return next((e for e in entries if folded in {_fold(n) for n in (e.id, e.name, *e.aliases)}), None)


def known_ids() -> list[str]:
    return [e.id for e in registry().licences]
