"""Every way of editing the ledger by hand is caught, by `Ledger.verify` and by the readers that decide from it."""

from __future__ import annotations

import json

import pytest

from distil.decide import record_decision
from distil.errors import LedgerError
from distil.ledger.keys import act_message, sign_message
from distil.runs import latest_run
from distil.spec.gate import locked_gate, require_unchanged_gate
from distil.spec.io import load_project

from .conftest import execute, forge_event, record_evaluation, typed_row_hash


def _seq(project, kind: str) -> int:
    return project.ledger.events(kind)[-1].seq


def test_a_clean_signed_project_verifies_with_its_acts_signed(signed_project):
    record_decision(signed_project, "quinn")
    result = signed_project.ledger.verify()
    assert result.ok, result.problems
    assert result.signed == 2 and result.unsigned == ()


def test_an_edited_payload_is_named(signed_project):
    seq = _seq(signed_project, "evaluation")
    execute(
        signed_project.ledger.path,
        "UPDATE events SET payload = replace(payload, 'run-1', 'run-2') WHERE seq = ?",
        (seq,),
    )
    result = signed_project.ledger.verify()
    assert (
        not result.ok
        and result.broken_seq == seq
        and f"row {seq} (evaluation): content does not match its hash" in result.reason
    )


def test_an_edited_typed_row_is_named_and_not_read(signed_project):
    seq = _seq(signed_project, "gate.locked")
    execute(
        signed_project.ledger.path,
        "UPDATE gates SET canonical = replace(canonical, '0.95', '0.5') WHERE event_seq = ?",
        (seq,),
    )
    result = signed_project.ledger.verify()
    assert not result.ok and f"row {seq} (gate.locked): its gates row was changed" in result.reason
    with pytest.raises(LedgerError, match=f"gates row of event {seq} does not verify"):
        locked_gate(signed_project)


def test_a_forged_decision_bound_to_another_event_is_caught_and_never_served(signed_project):
    evaluation_seq = _seq(signed_project, "evaluation")
    execute(
        signed_project.ledger.path,
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (?, 'run-1', "
        "'ship', 'quinn', 'dev', ?)",
        (evaluation_seq, evaluation_seq),
    )
    result = signed_project.ledger.verify()
    assert (
        not result.ok
        and f"decisions row bound to event {evaluation_seq}: that event does not bind a decisions row" in result.reason
    )
    with pytest.raises(LedgerError, match=f"decisions row of event {evaluation_seq} does not verify"):
        latest_run(signed_project, shipped_first=True)


def test_a_forged_decision_under_a_real_decision_event_is_caught(signed_project):
    _, _, event = record_decision(signed_project, "quinn")
    execute(
        signed_project.ledger.path,
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (?, 'run-9', "
        "'ship', 'quinn', 'dev', 2)",
        (event.seq,),
    )
    result = signed_project.ledger.verify()
    assert not result.ok and f"row {event.seq} (decision): its decisions row was changed or removed" in result.reason
    with pytest.raises(LedgerError, match="another row was added under the same event"):
        latest_run(signed_project, shipped_first=True)


def test_a_forged_ship_decision_with_no_event_is_refused_by_serve(unsigned_project):
    execute(
        unsigned_project.ledger.path,
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (9999, "
        "'run-x', 'ship', 'quinn', 'dev', 2)",
    )
    assert "decisions row bound to event 9999: no such event" in unsigned_project.ledger.verify().reason
    with pytest.raises(LedgerError, match="decisions row of event 9999 does not verify: no such event"):
        latest_run(unsigned_project, shipped_first=True)


def test_a_forged_evaluation_is_refused_by_decide(unsigned_project):
    execute(
        unsigned_project.ledger.path,
        "INSERT INTO evaluations (event_seq, run_id, variant, path, summary) VALUES (9999, 'run-x', 'distilled', "
        "'x', ?)",
        (json.dumps({"student": {"agreement": 1.0}}),),
    )
    assert "evaluations row bound to event 9999" in unsigned_project.ledger.verify().reason
    with pytest.raises(LedgerError, match="evaluations row of event 9999"):
        record_decision(unsigned_project, "quinn")
    assert unsigned_project.ledger.rows("decisions") == []


def test_a_forged_gate_version_is_not_shown_or_used(unsigned_project):
    gate_seq = _seq(unsigned_project, "gate.locked")
    for event_seq in (gate_seq, 9999):  # under the real lock's event, then under none
        execute(unsigned_project.ledger.path, "DELETE FROM gates WHERE version = 2")
        execute(
            unsigned_project.ledger.path,
            "INSERT INTO gates (event_seq, version, sha256, canonical, locked_by, reason) VALUES (?, 2, 'sha256:x', "
            "?, 'maria', 'lower')",
            (event_seq, json.dumps({"fidelity_min": 0.1})),
        )
        assert not unsigned_project.ledger.verify().ok
        with pytest.raises(LedgerError, match="gates row of event"):
            require_unchanged_gate(unsigned_project)


def test_a_deleted_middle_row_is_named(signed_project):
    record_evaluation(signed_project, "run-2")
    seq = _seq(signed_project, "evaluation")
    execute(signed_project.ledger.path, "DELETE FROM evaluations WHERE event_seq = ?", (seq - 1,))
    execute(signed_project.ledger.path, "DELETE FROM events WHERE seq = ?", (seq - 1,))
    result = signed_project.ledger.verify()
    assert not result.ok and f"row {seq}: sequence gap" in result.reason


def _drop_from(project, seq: int) -> None:
    for table in ("decisions", "evaluations", "gates"):
        execute(project.ledger.path, f"DELETE FROM {table} WHERE event_seq >= ?", (seq,))
    execute(project.ledger.path, "DELETE FROM events WHERE seq >= ?", (seq,))


def test_deleting_the_last_rows_is_caught_with_a_kept_head(unsigned_project):
    head = unsigned_project.ledger.head()
    record_evaluation(unsigned_project, "run-2")
    assert unsigned_project.ledger.verify(head=head).ok  # the chain still holds an older head
    kept = unsigned_project.ledger.head()
    _drop_from(unsigned_project, kept[0])
    assert unsigned_project.ledger.verify().ok  # nothing inside the file shows it
    result = unsigned_project.ledger.verify(head=kept)
    assert not result.ok and f"the head you gave, {kept[0]}:{kept[1]}, is not in the chain" in result.reason


def test_deleting_the_last_signed_act_is_caught_by_the_head_its_signer_kept(signed_project):
    _, _, event = record_decision(signed_project, "quinn")
    _drop_from(signed_project, event.seq)
    result = signed_project.ledger.verify()
    assert not result.ok and f"the last head signed here, {event.seq}:{event.hash}" in result.reason


def test_an_appended_act_with_recomputed_hashes_is_caught_when_acts_are_signed(signed_project):
    evaluation_seq = _seq(signed_project, "evaluation")
    row = {
        "run_id": "run-1",
        "decision": "ship",
        "validator": "quinn",
        "driver": "dev",
        "evaluation_seq": evaluation_seq,
    }
    db = signed_project.ledger.path
    seq = signed_project.ledger.head()[0] + 1
    execute(
        db,
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (?, ?, ?, ?, "
        "?, ?)",
        (seq, *row.values()),
    )
    payload = {**row, "typed_row": {"table": "decisions", "sha256": typed_row_hash(db, "decisions", seq)}}
    assert forge_event(db, "decision", "quinn", payload) == seq
    result = signed_project.ledger.verify()
    assert (
        not result.ok and f"row {seq} (decision): an act by quinn with no signature after signed acts" in result.reason
    )
    with pytest.raises(LedgerError, match="no signature after signed acts"):
        latest_run(signed_project, shipped_first=True)


def test_an_act_signed_with_another_key_is_caught(signed_project):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    head = signed_project.ledger.head()
    payload = {"run_id": "run-1", "signed_head": {"seq": head[0], "hash": head[1]}}
    payload["signature"] = sign_message(Ed25519PrivateKey.generate(), act_message("decision", "quinn", payload))
    seq = forge_event(signed_project.ledger.path, "decision", "quinn", payload)
    result = load_project(signed_project.spec_path).ledger.verify()
    assert not result.ok and f"row {seq} (decision): signed with a key that is not quinn's" in result.reason


def test_a_signed_act_edited_after_signing_is_caught(signed_project):
    seq = _seq(signed_project, "gate.locked")
    with_reason = json.loads(json.dumps(signed_project.ledger.event(seq).payload))
    with_reason["reason"] = "changed later"
    from distil.ledger.store import canonical_json

    execute(
        signed_project.ledger.path, "UPDATE events SET payload = ? WHERE seq = ?", (canonical_json(with_reason), seq)
    )
    problems = signed_project.ledger.verify().problems
    assert any(f"row {seq} (gate.locked): its signature does not hold" in p for p in problems)


def test_a_missing_recorded_file_is_reported_unless_allowed(tmp_path):
    from distil.ledger.store import Ledger

    ledger = Ledger(tmp_path / ".distil" / "ledger.db")
    shard = tmp_path / ".distil" / "data" / "shard.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"bytes")
    event = ledger.append("dataset.generated", {}, files=[shard])
    assert ledger.verify().ok
    shard.unlink()
    result = ledger.verify()
    assert (
        not result.ok
        and f"row {event.seq} (dataset.generated): recorded file .distil/data/shard.parquet is missing" in result.reason
    )
    allowed = ledger.verify(allow_missing=True)
    assert allowed.ok and allowed.missing == (".distil/data/shard.parquet",)


def test_files_under_a_symlinked_state_folder_are_recorded_relative_and_found_after_a_move(tmp_path):
    import shutil

    from distil.ledger.store import Ledger

    project, elsewhere = tmp_path / "project", tmp_path / "disk" / "state"
    project.mkdir()
    elsewhere.mkdir(parents=True)
    (project / ".distil").symlink_to(elsewhere)
    shard = project / ".distil" / "data" / "shard.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"bytes")
    ledger = Ledger(project / ".distil" / "ledger.db", root=project)
    event = ledger.append("dataset.generated", {}, files=[shard.resolve()])  # even given through the link's target
    assert list(event.payload["files"]) == [".distil/data/shard.parquet"]
    moved = tmp_path / "moved"
    shutil.move(str(project), moved)
    (elsewhere / "data" / "shard.parquet").write_bytes(b"other")
    result = Ledger(moved / ".distil" / "ledger.db", root=moved).verify()
    assert not result.ok and "file .distil/data/shard.parquet changed" in result.reason
