"""A tiny tokenizer for the text-rendered preference task, trained locally in well under two seconds.

Byte-level BPE (the ``tokenizers`` library, GPT-2 style pre-tokenisation) trained on the samples' text,
plus *whole* tokens for everything structural: the chat and output tags, the quoted profile keys, every
vocabulary term (with and without a leading space), the dimension names, ``Image A`` / ``Image B``, the
scores ``(0)``..``(5)`` and the numbers 0-25, and combined term-with-role tokens (see ``whole_tokens``).
Prompts then have a fixed length for a fixed ``num_history``, targets a fixed length, and each step of the
chain of thought is a lookup by content (README: "why it learns"). Byte-level fallback keeps any text encodable.
"""

from __future__ import annotations

import re

from .synthetic import ASSISTANT_TAG, USER_TAG
from .vocab import DIMENSION_WORDS, DIMENSIONS, REASONS, all_terms

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BPE_VOCAB_SIZE = 400
#: BPE is trained on at most this many samples: the text outside the whole tokens is nearly constant.
MAX_TRAIN_SAMPLES = 256


def whole_tokens() -> list[str]:
    """Strings that get a single token each (matched leftmost-longest before BPE).

    Besides the tags, keys and terms, a few *combined* tokens carry a term together with its role, so that
    every step of the chain of thought is a lookup by token content rather than by position:
    ``" liked Cubism"`` / ``" disliked Cubism"`` (the references in the prompt), ``"; Image A Cubism"`` /
    ``"; Image B Cubism"`` (the candidates, in the prompt and in the think), ``" likes Cubism"`` /
    ``", dislikes Cubism"`` (the profile restated in the think), ``"(5) - liked style"`` (a score with its
    reason) and the think line headers ``"\n2. Color:"``.
    """
    toks = [
        USER_TAG, ASSISTANT_TAG,
        "<visual preference profile>", "</visual preference profile>",
        "<visual non-preference profile>", "</visual non-preference profile>",
        "<think>", "</think>", "<answer>", "</answer>",
        "Image A", "Image B", " Image A", " Image B",
        "total_score=", ": total_score=", "Totals:", "\nTotals:",
    ]
    for i, d in enumerate(DIMENSIONS):
        # the quoted keys of the profiles, with the separators around them
        toks.append(f'"{d}": "' if i == 0 else f'", "{d}": "')
        toks += [d, f" {d}", f"{d}:", f"{i + 1}. {d}:", f"\n{i + 1}. {d}:"]
        for score, r in REASONS.items():
            toks += [f"({score}) - {r} {DIMENSION_WORDS[d]}", f"({score}) - {r} {DIMENSION_WORDS[d]}."]
    toks.append('"')
    for t in all_terms():
        toks += [t, f" {t}", f" liked {t}", f" disliked {t}", f"; Image A {t}", f"; Image B {t}",
                 f" likes {t}", f", dislikes {t}"]
    toks += [f"({s})" for s in range(6)]
    toks += [str(n) for n in range(26)]
    seen, out = set(), []
    for t in toks:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def build_tokenizer(samples: list[dict], vocab_size: int = BPE_VOCAB_SIZE):
    """Train the tokenizer on ``samples`` (their ``prompt`` and ``target`` text).

    Returns a ``transformers.PreTrainedTokenizerFast`` with ``eos_token`` and ``pad_token`` set (distinct
    ids), no BOS, and ``clean_up_tokenization_spaces=False`` so that ``decode(encode(target)) == target``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    whole = whole_tokens()
    # Train BPE only on what the whole tokens do not cover.
    split = re.compile("|".join(re.escape(t) for t in sorted(whole, key=len, reverse=True)))

    def pieces():
        for s in samples[:MAX_TRAIN_SAMPLES]:
            for key in ("prompt", "target"):
                text = s.get(key)
                if text:
                    for piece in split.split(text):
                        if piece:
                            yield piece

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(pieces(), trainer)
    tok.add_tokens([AddedToken(t, normalized=False, single_word=False, lstrip=False, rstrip=False)
                    for t in whole])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )
    hf.padding_side = "left"
    return hf
