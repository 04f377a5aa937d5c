"""People's signing keys: Ed25519 pairs whose private half lives outside the project.

``distil keys init --as NAME`` writes ``<config>/keys/NAME.key`` (mode 0600, folder 0700), where
``<config>`` is ``$XDG_CONFIG_HOME/distil`` or ``~/.config/distil``; the public half goes into the
spec's ``roles.keys``. An act of a person (gate lock, licence review, evaluation-set lock, deployment,
decision) is signed over its kind, actor and payload, and that payload carries the chain's head at
signing (``signed_head``: the previous event's seq and hash), so a signed act also vouches for every
row before it. Each signer keeps the newest head they signed per ledger in ``<config>/heads/``;
``Ledger.verify`` reports a chain that no longer holds one of those heads (rows deleted from the end).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from distil.errors import SigningError
from distil.files import write_bytes_atomic, write_json_atomic

SIGNED_ACTS = (
    "gate.locked",
    "licence.reviewed",
    "evaluation_set.locked",
    "deployment",
    "deployment.stopped",
    "decision",
)
ALGORITHM = "ed25519"
Signer = Callable[[bytes], dict[str, str]]


# --- where keys live ---------------------------------------------------------------------------------


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "distil"


def user_keys_dir() -> Path:
    return config_dir() / "keys"


def project_keys_dir(project_root: str | os.PathLike[str]) -> Path:
    """Keys kept for one project folder only (quickstart's throwaway keys): outside the project, named by its path."""
    tag = hashlib.sha256(str(Path(project_root).resolve()).encode()).hexdigest()[:16]
    return config_dir() / "projects" / tag / "keys"


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name.strip().casefold()) + ".key"


def key_locations(name: str, project_root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where ``name``'s private key is looked for, first match wins: the project's own keys, then the user's."""
    folders = ([project_keys_dir(project_root)] if project_root is not None else []) + [user_keys_dir()]
    return [folder / _file_name(name) for folder in folders]


# --- making and reading keys -------------------------------------------------------------------------


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{ALGORITHM}:{base64.b64encode(raw).decode()}"


def create_key(name: str, folder: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Make ``name``'s key pair in ``folder`` (default: the user's keys folder). Returns (private key path, public key).

    Refuses to replace an existing key: acts already signed with it would no longer match the spec.
    """
    target = Path(folder or user_keys_dir()) / _file_name(name)
    if target.exists():
        raise SigningError(f"{target}: {name} already has a key", hint=f"print it with `distil keys show --as {name}`")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_bytes_atomic(target, pem, mode=0o600)
    return target, public_key_text(private)


def load_private_key(
    name: str, project_root: str | os.PathLike[str] | None = None
) -> tuple[Path, Ed25519PrivateKey] | None:
    for path in key_locations(name, project_root):
        if path.is_file():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise SigningError(
                    f"{path}: not a readable private key ({exc})",
                    hint=f"move it away and run `distil keys init --as {name}`",
                ) from None
            if not isinstance(key, Ed25519PrivateKey):
                raise SigningError(
                    f"{path}: not an Ed25519 key", hint=f"move it away and run `distil keys init --as {name}`"
                )
            return path, key
    return None


def throwaway_keys(project_root: str | os.PathLike[str], names: list[str]) -> tuple[Path, dict[str, str]]:
    """Keys for example roles, kept for this project folder only (outside it): (their folder, name -> public key).

    An existing key is reused, so rerunning an example keeps signing with the keys its spec names."""
    folder = project_keys_dir(project_root)
    public: dict[str, str] = {}
    for name in dict.fromkeys(n for n in names if n):
        found = load_private_key(name, project_root)
        if found is not None and found[0].parent == folder:
            public[name] = public_key_text(found[1])
        else:
            public[name] = create_key(name, folder)[1]
    return folder, public


# --- signing and checking ----------------------------------------------------------------------------


def act_message(kind: str, actor: str, body: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the event's kind, actor and payload (less the signature itself)."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(
        {"kind": kind, "actor": actor, "payload": unsigned},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    ).encode()


def sign_message(private: Ed25519PrivateKey, message: bytes) -> dict[str, str]:
    return {"alg": ALGORITHM, "key": public_key_text(private), "sig": base64.b64encode(private.sign(message)).decode()}


def signature_holds(signature: Any, message: bytes) -> bool:
    """Whether ``signature`` (a dict from :func:`sign_message`) is valid for ``message`` under the key it names."""
    try:
        if signature.get("alg") != ALGORITHM:
            return False
        raw = base64.b64decode(signature["key"].split(":", 1)[1], validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(signature["sig"], validate=True), message)
        return True
    except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return False


def signer_for(project: Any, actor: str) -> Signer | None:
    """The signer for ``actor``'s acts in ``project``: None when the spec sets no keys (the act stays unsigned).

    When it sets keys, ``actor`` must have one there and hold its private half on this machine
    (SigningError, exit 2, otherwise).
    """
    roles = project.spec.roles
    if not roles.keys:
        return None
    wanted = roles.key_of(actor)
    if wanted is None:
        raise SigningError(
            f"roles.keys: {actor} has no public key in the spec, and this project signs the acts of people",
            hint=f"{actor} runs `distil keys init --as {actor}` and the spec's roles.keys gets the printed key",
        )
    found = load_private_key(actor, project.root)
    if found is None:
        places = ", ".join(str(p) for p in key_locations(actor, project.root))
        raise SigningError(
            f"--as {actor}: {actor}'s private key is not on this machine (looked in {places})",
            hint=f"run this step as {actor}, on the machine that holds their key",
        )
    path, private = found
    if public_key_text(private) != wanted:
        raise SigningError(
            f"--as {actor}: the key in {path} is not the one roles.keys gives {actor}",
            hint=f"use {actor}'s own key, or update roles.keys with `distil keys show --as {actor}`",
        )
    return lambda message: sign_message(private, message)


def sign_act(project: Any, actor: str, kind: str, payload: dict[str, Any]) -> dict[str, str] | None:
    """A signature dict for an act (None when the project sets no keys). ``Ledger.append(signer=...)`` is the usual
    way."""
    signer = signer_for(project, actor)
    return None if signer is None else signer(act_message(kind, actor, payload))


# --- heads each signer keeps -------------------------------------------------------------------------


def _heads_file(ledger_id: str) -> Path:
    return config_dir() / "heads" / f"{ledger_id.removeprefix('sha256:')[:32]}.json"


def remember_head(ledger_id: str, seq: int, digest: str) -> None:
    """Keep the newest head this user signed in this ledger (identified by its first event's hash)."""
    path = _heads_file(ledger_id)
    known = remembered_head(ledger_id)
    if known is None or known[0] < seq:
        write_json_atomic(path, {"seq": seq, "hash": digest}, mode=0o600)


def remembered_head(ledger_id: str) -> tuple[int, str] | None:
    path = _heads_file(ledger_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["seq"]), str(data["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
