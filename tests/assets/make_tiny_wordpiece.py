"""Rebuilds tests/assets/tiny-wordpiece/vocab.txt: a WordPiece vocabulary (lower-case words, digits, letters)
for tiny random BERT students, so tests have a student tokenizer that differs from the tiny teacher's BPE.

Run once by hand when the asset must change; the tests only read the saved file.
"""

from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "ticket note category billing technical account refund invoice charged charge paid twice payment card plan "
    "subscription login password reset email profile error crash bug app page export button server api sync slow "
    "urgent please help thanks hey hi my the a to is not can cannot why how what when i you we it this that on in "
    "of and or for summary yes no ok"
)


def main() -> None:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = (
        SPECIAL + list("0123456789") + list(".,:;!?'-/") + letters + ["##" + c for c in letters + list("0123456789")]
    )
    pieces += [w for w in dict.fromkeys(WORDS.split()) if w not in pieces]
    out = Path(__file__).parent / "tiny-wordpiece"
    out.mkdir(exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    print("saved", out, len(pieces))


if __name__ == "__main__":
    main()
