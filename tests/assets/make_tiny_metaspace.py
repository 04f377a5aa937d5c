"""Rebuilds tests/assets/tiny-metaspace: a SentencePiece-style BPE tokenizer (Metaspace "▁" word marks, vocab
320) for a tiny student whose tokenizer differs from tiny-tokenizer's byte-level BPE in its strings, its ids and
where it splits words, as a Llama-family student's differs from a GPT-2-family teacher's.

Run once by hand when the asset must change; the tests only read the saved files.
"""

import string
from pathlib import Path

from make_tiny_tokenizer import WORDS
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


def main() -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=list(string.printable.strip()) + ["▁"],
    )
    # fewer merges and another corpus order than tiny-tokenizer: the two split many words differently
    corpus = [" ".join(reversed(WORDS.split())), WORDS.lower()] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    out = Path(__file__).parent / "tiny-metaspace"
    fast.save_pretrained(out)
    print("saved", out, len(fast))


if __name__ == "__main__":
    main()
