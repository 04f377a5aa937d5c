"""People's names as the spec and ``--as`` give them: one written form per person, nothing hidden in it.

A name is NFKC-normalised (so a full-width or ligature form is the same name) and refused when it
holds a character that does not show (zero-width, control, odd spaces) or letters of two scripts
(a Cyrillic "е" inside a Latin name): either would let two different strings read as one person.
"""

from __future__ import annotations

import re
import unicodedata

# Scripts that are written together in one name (Japanese mixes kanji and kana).
_SCRIPT_FAMILIES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "CJK": "CJK"}
_HIDDEN_CATEGORIES = {"Cf", "Cc", "Cs", "Co", "Cn", "Zl", "Zp"}


def _script(char: str) -> str:
    """The script of a letter, read from the first word of its Unicode name (LATIN, CYRILLIC, GREEK...)."""
    word = unicodedata.name(char, "UNKNOWN").split(" ")[0]
    return _SCRIPT_FAMILIES.get(word, word)


def person_name(value: str, field: str = "") -> str:
    """``value`` NFKC-normalised and stripped; ValueError (naming ``field`` when given) when it hides or mixes
    characters."""
    where = f"{field}: " if field else ""
    name = unicodedata.normalize("NFKC", value).strip()
    for char in value + name:  # before NFKC too: it turns a no-break space into a plain one
        category = unicodedata.category(char)
        if category in _HIDDEN_CATEGORIES or (category == "Zs" and char != " "):
            raise ValueError(
                f"{where}{value!r} holds an invisible or control character (U+{ord(char):04X}); type the name plainly"
            )
    scripts = sorted({_script(c) for c in name if unicodedata.category(c).startswith("L")})
    if len(scripts) > 1:
        raise ValueError(
            f"{where}{value!r} mixes letters of several scripts ({', '.join(scripts)}); write it in one script"
        )
    return name


# Characters that change what a terminal shows rather than showing themselves: C0/C1 controls (ESC starts
# colour and cursor codes), line and paragraph separators, and the bidirectional overrides and isolates.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def plain_text(value: str, field: str = "") -> str:
    """``value`` when it is a name that prints as itself: not blank, no control or bidi-override characters;
    ValueError (naming ``field`` when given) otherwise. For names distil prints (labels, slices, the project's)."""
    where = f"{field}: " if field else ""
    if not value.strip():
        raise ValueError(f"{where}is empty or only spaces; write a name")
    for char in value:
        if unicodedata.category(char) == "Cs":  # YAML's "\ud800" escape gives half a pair, which no terminal prints
            raise ValueError(f"{where}{value!r} holds a lone surrogate (U+{ord(char):04X}); write the name plainly")
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            raise ValueError(f"{where}{value!r} holds a control character (U+{ord(char):04X}); write the name plainly")
    return value


def name_key(name: str) -> str:
    """The form two names are compared in: normalised and case-folded."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def same_person(a: str, b: str) -> bool:
    return name_key(a) == name_key(b)


RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_RUN_ID_LENGTH = 128


def run_id_problem(run_id: object) -> str:
    """Why ``run_id`` is not a plain folder name (no separators, no ``..``, at most 128 characters); "" when it is."""
    if not isinstance(run_id, str) or not run_id:
        return "run id: empty"
    if len(run_id) > MAX_RUN_ID_LENGTH:
        return f"run id {run_id[:40]!r}…: longer than {MAX_RUN_ID_LENGTH} characters"
    if ".." in run_id or not RUN_ID_PATTERN.fullmatch(run_id):
        return f"run id {run_id!r}: not a plain name (letters, digits, '.', '_', '-'; no path separators or '..')"
    return ""
