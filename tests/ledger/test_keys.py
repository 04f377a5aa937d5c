"""Signing keys: made outside the project, required for acts of people once the spec names them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from distil.cli import main
from distil.decide import record_decision
from distil.errors import SigningError, SpecError
from distil.ledger.keys import create_key, throwaway_keys, user_keys_dir
from distil.spec.gate import lock_gate
from distil.spec.io import load_project, spec_from_text

from .conftest import record_evaluation, with_keys


def test_keys_init_keeps_the_private_key_private_and_outside_the_project(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["keys", "init", "--as", "quinn"]) == 0
    out = capsys.readouterr().out
    path = user_keys_dir() / "quinn.key"
    assert path.is_file() and str(Path(os.environ["HOME"])) in str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    public = out.split('quinn: "')[1].split('"')[0]
    assert public.startswith("ed25519:")
    assert main(["keys", "show", "--as", "quinn"]) == 0
    assert public in capsys.readouterr().out
    assert main(["keys", "init", "--as", "quinn"]) == 2  # never replaced: signed acts would stop matching
    assert "already has a key" in capsys.readouterr().err


def test_the_old_plain_roles_and_the_keyed_form_both_load(triage_project):
    text = triage_project.read_text()
    public = create_key("quinn")[1]
    keyed = text.replace("  validator: quinn\n", f'  validator:\n    name: quinn\n    key: "{public}"\n')
    roles = spec_from_text(keyed).roles
    assert roles.validator == "quinn" and roles.key_of("Quinn") == public
    assert spec_from_text(text).roles.keys == {}


def test_the_validator_may_not_hold_the_drivers_key(triage_project):
    public = create_key("dev")[1]
    data = yaml.safe_load(triage_project.read_text())
    data["roles"]["keys"] = {"dev": public, "quinn": public}
    with pytest.raises(SpecError, match="same key as roles.driver"):
        spec_from_text(yaml.safe_dump(data))


def test_with_keys_an_act_needs_the_actors_own_private_key(triage_project, capsys):
    with_keys(triage_project, ["maria", "dev", "quinn"])
    (user_keys_dir() / "maria.key").unlink()  # maria's key is on another machine
    code = main(["gate", "lock", "--as", "maria", "--spec", str(triage_project)])
    assert code == 2 and "maria's private key is not on this machine" in capsys.readouterr().err
    create_key("maria")  # a key, but not the one the spec gives maria
    with pytest.raises(SigningError, match="is not the one roles.keys gives maria"):
        lock_gate(load_project(triage_project), "maria")
    assert load_project(triage_project).ledger.events() == []


def test_with_keys_an_actor_missing_from_them_is_refused(triage_project):
    with_keys(triage_project, ["maria", "dev"])
    project = load_project(triage_project)
    lock_gate(project, "maria")
    record_evaluation(project)
    with pytest.raises(SigningError, match="quinn has no public key in the spec"):
        record_decision(project, "quinn")


def test_a_name_with_an_invisible_character_is_refused_at_the_command_line(triage_project, capsys):
    code = main(["gate", "lock", "--as", "maria\u200b", "--spec", str(triage_project)])
    assert code == 2 and "invisible or control character" in capsys.readouterr().err


def test_unsigned_acts_are_shown_as_unsigned(unsigned_project, capsys):
    spec = str(unsigned_project.spec_path)
    assert main(["ledger", "log", "--spec", spec]) == 0
    assert "unsigned" in capsys.readouterr().out
    assert main(["ledger", "verify", "--spec", spec]) == 0
    assert "unsigned: 1 act(s)" in capsys.readouterr().out


def test_ledger_head_round_trips_through_verify(unsigned_project, capsys):
    spec = str(unsigned_project.spec_path)
    assert main(["ledger", "head", "--spec", spec]) == 0
    head = capsys.readouterr().out.strip()
    assert main(["ledger", "verify", "--spec", spec, "--head", head]) == 0
    seq = int(head.split(":")[0])
    bad = f"{seq}:sha256:{'0' * 64}"
    assert main(["ledger", "verify", "--spec", spec, "--head", bad]) == 1
    assert f"the head you gave, {bad}, is not in the chain" in capsys.readouterr().err


def test_quickstart_keys_live_outside_the_project_and_are_reused(tmp_path):
    project = tmp_path / "distil-quickstart"
    project.mkdir()
    folder, keys = throwaway_keys(project, ["maria", "dev", "quinn", "maria"])
    assert set(keys) == {"maria", "dev", "quinn"} and not str(folder.resolve()).startswith(str(project.resolve()))
    assert stat.S_IMODE((folder / "quinn.key").stat().st_mode) == 0o600
    assert throwaway_keys(project, ["maria", "dev", "quinn"])[1] == keys
