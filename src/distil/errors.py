"""Errors a user can act on. Each carries a hint that says what to do next.

The CLI prints ``error: <message>`` and ``hint: <hint>`` on stderr and exits 2; it never shows a
traceback for these unless ``--debug`` is given.
"""

from __future__ import annotations


class DistilError(Exception):
    """Base of every error distil raises for a user's input or project state."""

    exit_code = 2
    default_hint = "run `distil --help` for usage"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def __str__(self) -> str:
        return self.message


class SpecError(DistilError):
    """The project spec is missing, malformed or invalid."""

    default_hint = "fix the field named above in distil.yaml, then run `distil check`"


class GateError(DistilError):
    """The gate is not locked, was changed since it was locked, or the caller may not lock it."""

    default_hint = 'lock a new gate version with `distil gate lock --as <sponsor> --reason "..."`'


class RoleError(DistilError):
    """The person acting is not the one the spec's roles allow for this step."""

    default_hint = "pass --as NAME (or set DISTIL_USER) with the name the spec's roles section gives"


class LicenceError(DistilError):
    """A teacher's licence record forbids or does not yet allow collecting data from it."""

    default_hint = "review the teacher's terms and record them under teachers[].licence in distil.yaml"


class SigningError(DistilError):
    """An act that must be signed cannot be: no key in the spec, no private key here, or the wrong one."""

    default_hint = "run `distil keys init --as NAME` and put the printed key under roles.keys in distil.yaml"


class StateError(DistilError):
    """The project's state folder ``.distil`` is not a folder: a file, a broken symlink, a symlink loop."""

    default_hint = (
        "move the `.distil` named above aside, or point the symlink at a folder; distil creates the folder when it "
        "is missing"
    )


class LedgerError(DistilError):
    """The ledger cannot be opened or written."""

    default_hint = "check that .distil/ledger.db is a distil ledger and is writable"


class RecordedFileError(LedgerError):
    """A file the ledger recorded changed, went missing, or was never recorded: it is not loaded."""

    default_hint = (
        "restore the file from a copy you trust, or rebuild it (`distil train`, `distil curate`); `distil ledger "
        "verify` lists every recorded file"
    )


class DataError(DistilError):
    """An input file (seeds, gold set, traffic log, dataset shard) is missing or malformed."""

    default_hint = "fix or replace the file named above"


class TeacherError(DistilError):
    """A teacher cannot be loaded or called."""

    default_hint = "check the teacher's source in distil.yaml and that it is reachable"


class TrainError(DistilError):
    """Training cannot start or continue with the given settings."""

    default_hint = "run `distil plan` to see what fits, then adjust the student or batch size"


class TrackingError(DistilError):
    """The experiment tracker ``train.report_to`` names cannot be used (its library is not installed)."""

    default_hint = "install the package named above, or set train.report_to: none"


class EvaluationError(DistilError):
    """An evaluation cannot be run or read."""

    default_hint = "run `distil train` then `distil evaluate`"


class EvaluationSetError(DistilError):
    """A test split or gold set differs from the one locked in the ledger, or cannot be relocked."""

    default_hint = "run `distil curate` (it keeps the locked test split); a new test split needs a new gate version"


class RunError(DistilError):
    """A run id is not a plain name, has no folder, or the ledger does not know the run."""

    default_hint = "list the runs with `distil ledger log --kind run.trained` (or look in .distil/runs/)"


class DeploymentError(DistilError):
    """A run may not be put into service: no verified ship decision, or the wrong person serving it."""

    default_hint = (
        "decide first (`distil decide --as <validator>`), or serve with --allow-unshipped, which the ledger records"
    )


class CapabilityError(DistilError):
    """A step asks a teacher for something it cannot give (e.g. logits from a text-only API)."""

    default_hint = "choose a loss the teacher supports, or a teacher that returns logprobs"


class ReviewError(DistilError):
    """The review app cannot start as asked (e.g. bound beyond loopback without a key)."""

    default_hint = "serve on 127.0.0.1, or pass --api-key KEY (or set DISTIL_REVIEW_KEY) to bind elsewhere"
