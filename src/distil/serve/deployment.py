"""Deployments on the paper trail: which run was put into service, on whose word, by whom, and until when.

``distil serve`` plans a deployment before it loads anything (:func:`plan_deployment`): the operator is the
spec's operator and can sign, and the run's newest decision — read through the ledger's verified rows, so a
hand-inserted or edited decision is refused, never followed — is ``ship``. Serving a run without one needs
``--allow-unshipped``, and the row says so. Once the model is loaded, :func:`record_start` appends a signed
``deployment`` event with a ``deployments`` row; on shutdown :func:`record_stop` appends a signed
``deployment.stopped`` event whose row names the deployment it ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from distil.errors import DeploymentError, RoleError
from distil.ledger.keys import Signer, signer_for
from distil.spec.io import Project
from distil.spec.names import same_person

TABLE = "deployments"
STARTED = "deployment"
STOPPED = "deployment.stopped"


@dataclass(frozen=True)
class Deployment:
    """One run in service: the decision it rests on (None when served unshipped), where, by whom."""

    run_id: str
    decision_seq: int | None
    allow_unshipped: bool
    operator: str
    host: str
    port: int
    started_at: str = ""
    event_seq: int | None = None  # the `deployment` event, once recorded
    signer: Signer | None = None

    def row(self, **changes: Any) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "decision_seq": self.decision_seq,
            "allow_unshipped": int(self.allow_unshipped),
            "operator": self.operator,
            "host": self.host,
            "port": self.port,
            "started_at": self.started_at,
            "stopped_at": None,
            "started_seq": None,
            **changes,
        }


def ship_decision(project: Project, run_id: str) -> dict[str, Any] | None:
    """The run's newest decision when it is ``ship``, else None. Verified: a decision row no signed, hash-bound
    event vouches for is refused (LedgerError), not skipped."""
    rows = project.ledger.verified_rows("decisions", "run_id = ?", (run_id,))
    return rows[0] if rows and rows[0]["decision"] == "ship" else None


def require_operator(project: Project, operator: str) -> None:
    """Only the spec's operator (when it names one) puts a run into service."""
    named = project.spec.roles.operator
    if named and not same_person(operator, named):
        raise RoleError(
            f"roles.operator: only the operator ({named}) may serve a run, not {operator}",
            hint=f"run `distil serve --as {named}`",
        )


def plan_deployment(
    project: Project, run_id: str, operator: str, host: str, port: int, allow_unshipped: bool = False
) -> Deployment:
    """Check who serves ``run_id`` and on what decision; nothing is written. DeploymentError (exit 2) for a run
    whose newest verified decision is not ``ship``, unless ``allow_unshipped``."""
    require_operator(project, operator)
    signer = signer_for(project, operator)  # refused here, before a model is loaded, when the operator cannot sign
    decision = ship_decision(project, run_id)
    if decision is None and not allow_unshipped:
        newest = project.ledger.verified_latest("decisions", "run_id = ?", (run_id,))
        said = (
            f"its newest decision is {newest['decision']} (ledger event {newest['event_seq']})"
            if newest
            else "it has no decision"
        )
        raise DeploymentError(f"serve: run {run_id} was not decided ship: {said}")
    return Deployment(
        run_id, decision["event_seq"] if decision else None, allow_unshipped, operator, host, port, signer=signer
    )


def record_start(project: Project, deployment: Deployment) -> Deployment:
    """Append the signed ``deployment`` event and its row; the deployment with its event seq and start time."""
    started = replace(deployment, started_at=_now())
    row = started.row()
    event = project.ledger.append(STARTED, row, actor=started.operator, table=TABLE, row=row, signer=started.signer)
    return replace(started, event_seq=event.seq)


def record_stop(project: Project, deployment: Deployment) -> int:
    """Append the signed ``deployment.stopped`` event for a started deployment; returns its seq."""
    row = deployment.row(stopped_at=_now(), started_seq=deployment.event_seq)
    return project.ledger.append(
        STOPPED, row, actor=deployment.operator, table=TABLE, row=row, signer=deployment.signer
    ).seq


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
