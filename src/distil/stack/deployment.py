"""A stack on the paper trail: each specialist's (and the router's) project records the deployment of its run, as
`distil serve` records one (:mod:`distil.serve.deployment`): planned before anything is loaded (the operator is the
project's and can sign; the run was decided ship), a signed ``deployment`` row at start and ``deployment.stopped``
at the end."""

from __future__ import annotations

from dataclasses import dataclass

from distil.errors import DistilError
from distil.serve.deployment import Deployment, plan_deployment, record_start, record_stop
from distil.spec.io import Project
from distil.stack.load import CheckedRun
from distil.stack.spec import Stack


@dataclass(frozen=True)
class StackDeployment:
    name: str  # the specialist (or ``router``)
    project: Project
    deployment: Deployment


def plan_stack(stack: Stack, checked: list[CheckedRun], operator: str, host: str, port: int) -> list[StackDeployment]:
    """One planned deployment per checked run; the first refusal (wrong operator, no key, not shipped) names its
    specialist."""
    planned = []
    for run in checked:
        try:
            deployment = plan_deployment(run.project, run.run_id, operator, host, port)
        except DistilError as exc:
            raise type(exc)(f"{stack.path.name}: {run.name}: {exc.message}", hint=exc.hint) from None
        planned.append(StackDeployment(run.name, run.project, deployment))
    return planned


def record_stack_start(planned: list[StackDeployment]) -> list[StackDeployment]:
    return [StackDeployment(p.name, p.project, record_start(p.project, p.deployment)) for p in planned]


def record_stack_stop(started: list[StackDeployment]) -> list[int]:
    return [record_stop(p.project, p.deployment) for p in started]
