"""Rebuilds tests/assets/tiny-tokenizer: a byte-level BPE tokenizer (vocab 512) for tiny random models.

Run once by hand when the asset must change; the tests only read the saved files.
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

WORDS = (
    "ticket category billing technical account refund invoice charged twice payment card plan subscription "
    "login password reset email error crash app page export button server api sync slow urgent please help "
    "thanks hey hi my the a to is not can cannot why how what when i you we it this that on in of and or for "
    "summary user assistant system yes no ok N/A"
)


def main() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [WORDS, WORDS.upper(), " ".join(w.capitalize() for w in WORDS.split())] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    fast.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    out = Path(__file__).parent / "tiny-tokenizer"
    fast.save_pretrained(out)
    print("saved", out, len(fast))


if __name__ == "__main__":
    main()
