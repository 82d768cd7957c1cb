"""Word error rate, for comparing transcripts without caring about case or punctuation."""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w']+")


def words(text: str) -> list[str]:
    """Lower-case words; punctuation becomes a word break, apostrophes stay (don't, it's)."""
    return [word.strip("'") for word in _NOT_WORD.sub(" ", text.lower()).split() if word.strip("'")]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1] / len(ref)
