"""Answer-quality metrics for labelling "good enough" and scoring routing curves (pure Python).

ROUGE-L is the F-measure of the longest common subsequence of word tokens (Lin, 2004): it rewards an
answer that says the reference's words in the reference's order, without needing exact n-gram matches.
Tokens are lower-cased runs of letters and digits, so punctuation and markdown do not count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric word tokens."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a)*len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else (prev[j] if prev[j] >= cur[j - 1] else cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure in [0, 1] of ``candidate`` against ``reference`` (0 when either has no tokens)."""
    c, r = tokenize(candidate), tokenize(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    b2 = beta * beta
    return (1 + b2) * precision * recall / (recall + b2 * precision)


def rouge_l_max(candidate: str, references: Sequence[str]) -> float:
    """Best ROUGE-L over several references (0 for none)."""
    return max((rouge_l(candidate, r) for r in references), default=0.0)
