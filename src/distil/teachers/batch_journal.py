"""Where the batches an API teacher submitted are remembered, so a restarted command polls them instead of paying
for the same requests again (:mod:`distil.teachers.openai_batch`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from distil.ledger.store import Ledger


class BatchJournal(Protocol):
    """Where submitted batches are remembered between processes."""

    def submitted(self, requests_sha256: str) -> list[str]:
        """Ids of the batches submitted earlier for these request lines, oldest first."""
        ...

    def record(self, requests_sha256: str, batch_id: str, input_file_id: str, requests: int) -> None: ...


@dataclass
class MemoryJournal:
    """Batches remembered for this process only (a teacher built without a project)."""

    batches: dict[str, list[str]] = field(default_factory=dict)

    def submitted(self, requests_sha256: str) -> list[str]:
        return list(self.batches.get(requests_sha256, []))

    def record(self, requests_sha256: str, batch_id: str, input_file_id: str, requests: int) -> None:
        self.batches.setdefault(requests_sha256, []).append(batch_id)


@dataclass
class LedgerJournal:
    """Batches recorded in the project's ledger, one ``teacher.batch_submitted`` event each."""

    ledger: Ledger
    teacher_id: str
    base_url: str  # public: no credentials
    actor: str = ""

    def submitted(self, requests_sha256: str) -> list[str]:
        return [
            e.payload["batch_id"]
            for e in self.ledger.events("teacher.batch_submitted")
            if e.payload.get("requests_sha256") == requests_sha256
            and e.payload.get("teacher_id") == self.teacher_id
            and e.payload.get("base_url") == self.base_url
        ]

    def record(self, requests_sha256: str, batch_id: str, input_file_id: str, requests: int) -> None:
        self.ledger.append(
            "teacher.batch_submitted",
            {
                "teacher_id": self.teacher_id,
                "base_url": self.base_url,
                "batch_id": batch_id,
                "input_file_id": input_file_id,
                "requests": requests,
                "requests_sha256": requests_sha256,
            },
            actor=self.actor,
        )
