"""A word-level tokenizer over a fixed vocabulary, built offline: the tokenizer of the built-in tiny models
(`vidsparse.app.models`) and of the yardstick (`vidsparse.yardstick`, over its scene grammar's words).

    >>> tokenizer = word_tokenizer("$A </s>")               # T5 style; "<s> $A" Llama style
    >>> tokenizer("a red ball").input_ids
    [4, 16, 27, 1]

`tokenizers` and `transformers` are imported when a tokenizer is built, not when this module is.
"""

from __future__ import annotations

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "UNK_ID", "WORDS", "word_tokenizer"]

# Special tokens first, so that their ids are fixed: pad 0, eos 1, unk 2, bos 3.
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]
# fmt: off
WORDS = [
    "a", "an", "the", "of", "and", "in", "on", "with", "at", "to", "is", "are",
    "red", "green", "blue", "yellow", "white", "black", "orange", "purple",
    "circle", "square", "triangle", "ball", "cube", "dog", "cat", "bird", "car", "tree", "house", "river", "sky",
    "moon", "sun", "moving", "jumping", "rolling", "spinning", "flying", "slowly", "fast", "big", "small",
    "describe", "video", "scene", "camera", ":", ",", ".",
]
# fmt: on
PAD_ID, EOS_ID, UNK_ID, BOS_ID = range(4)


def word_tokenizer(
    template: str = "$A </s>", model_max_length: int = 512, words: list[str] | None = None
):
    """A lower-casing, whitespace-splitting word-level tokenizer over a fixed vocabulary (default: about 60 words).

    `template` is the `tokenizers` post-processing template that adds special tokens: "$A </s>" as T5/UMT5,
    "<s> $A" as Llama, "<s> $A </s>" as CLIP. Unknown words map to "<unk>"; padding is on the right.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(SPECIAL_TOKENS + list(WORDS if words is None else words))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("</s>", EOS_ID), ("<s>", BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        model_max_length=model_max_length,
    )
