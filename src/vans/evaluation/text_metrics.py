"""Caption metrics: BLEU-1..4 and ROUGE-L as the COCO-caption toolkit computes them, and the
ROUGE-L of Google's `rouge-score`.

The VANS paper reports "BLEU@4" and "ROUGE-L", the pair the COCO-caption toolkit
(pycocoevalcap) prints, so the COCO definitions are the defaults here:

* Tokens: Stanford's PTBTokenizer (run with -preserveLines -lowerCase) followed by removal of
  the tokens in `PUNCTUATION`. `coco_tokenize` is a pure-Python re-implementation (no Java).
* BLEU: corpus level, like `BleuScorer.compute_score(option="closest")`: clipped n-gram
  counts summed over the corpus, each precision (correct + 1e-15) / (guess + 1e-9), the
  geometric mean of orders 1..n, and a brevity penalty exp(1 - r/c) when the summed candidate
  length c is below the summed reference length r, where each candidate's r is its closest
  reference length (ties to the shorter one). The 1e-15 keeps a zero n-gram match from giving
  exactly 0: one unmatched order pulls BLEU down to ~1e-4, not to 0 as in sacrebleu.
* ROUGE-L "coco": the longest common subsequence (LCS) of tokens; precision and recall are
  each maximised over the references (possibly from different references), then
  F = (1 + b^2) P R / (R + b^2 P) with b = 1.2, 0 if either is 0.
* ROUGE-L "rouge-score": `rouge_scorer.RougeScorer(["rougeL"])` F1 with its default
  tokenizer (lowercase, every non-[a-z0-9] run becomes a space, no stemming); with several
  references the best F1, as `score_multi` does.

Both toolkits report the corpus ROUGE-L as the mean of the per-caption scores. `rouge_l`
is also the Joint-GRPO caption reward r_t1, so it is kept cheap: cached tokens and a
bit-parallel LCS.

Where `coco_tokenize` can differ from the Java tokenizer (CoreNLP 3.4.1):
  - no British-to-American respelling ("colour" stays "colour"; Java's `americanize` may
    rewrite it), no SGML/entity handling ("&amp;"), URLs and e-mail addresses are split at
    punctuation instead of kept whole, "/" and "*" are not backslash-escaped;
  - only the commonest apostrophe words are kept whole ("o'clock", "'em", "'90s", "'n'");
    rare ones such as "y'all" split differently;
  - emoji and other characters the Java lexer cannot classify are kept as one-character
    tokens (Java deletes them).
A quirk of the Java pipeline that IS reproduced: it lowercases after PTB escaping, so "(" and
"[" become "-lrb-" and ")" and "]" become "-rrb-", which the toolkit's punctuation list (written
upper-case, "-LRB-") does not remove; brackets therefore count as words in COCO BLEU and
ROUGE-L.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

PUNCTUATION = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--"}
    | {"...", ";"}
)
"""Tokens pycocoevalcap drops after tokenizing (its list, verbatim)."""

ROUGE_VARIANTS = ("coco", "rouge-score")
"""Names accepted by `rouge_l` / `corpus_rouge_l`."""

DEFAULT_ROUGE_VARIANT = "coco"
"""The variant reported by default: the paper's BLEU@4 + ROUGE-L pair is the COCO toolkit's."""

COCO_ROUGE_BETA = 1.2
"""pycocoevalcap's recall weight in the ROUGE-L F-measure."""

BLEU_TINY = 1e-15
"""pycocoevalcap's numerator offset: a zero n-gram match gives a tiny, not a zero, precision."""

BLEU_SMALL = 1e-9
"""pycocoevalcap's denominator offset (avoids 0 / 0 for captions shorter than n)."""

# --------------------------------------------------------------------------- tokenizers

# Abbreviations the PTB lexer keeps together with their period ("mr.", "no."), from its
# ABBREV1/ABBREV2 classes; the lexer is case-insensitive except for the state names that
# are also common words, which it only takes when capitalised.
_ABBREVIATIONS = (
    r"jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri|"
    r"ala|ariz|calif|colo|conn|dak|del|fla|ga|ind|kan|kans|ky|la|md|mich|minn|mo|mont|neb|"
    r"nev|okla|pa|penn|tenn|tex|va|vt|wis|wisc|wyo|"
    r"inc|co|cos|corp|pty|ptys|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys|"
    r"no|nos|prop|ph|tel|est|ext|sq|ft|jr|sr|bros|blvd|rd|esq|etc|al|seq|ph\.d|ed\.d|"
    r"mr|mrs|ms|dr|drs|prof|profs|sen|sens|rep|reps|atty|attys|lt|col|gen|messrs|gov|govs|"
    r"adm|rev|maj|sgt|cpl|pvt|mt|capt|st|ste|ave|pres|lieut|hon|brig|cmdr|comdr|pfc|spc|"
    r"supt|supts|det|vs|alex|wm|jos|cie|cf|treas|invt|elec|natl|mfg|mtg|"
    r"(?-i:Ark|Ill|Mass|Miss|Ore|Wash)"
)
_PART = r"(?:\d+(?:[.,:]\d+)+|[^\W_]+)"  # a number with separators ("1,000", "3.5") or alnum run
# Hyphenated and slashed words ("well-known", "3-year-old", "black/white") and the
# d'/o'/l' prefixes ("o'clock") stay one token.
_WORD = rf"(?:[dol]'(?=[^\W_]))?{_PART}(?:[-_]{_PART})*(?:/{_PART}(?:-{_PART})*){{0,2}}"
_BRACKETS = {"(": "-LRB-", "[": "-LRB-", "<": "-LRB-", ")": "-RRB-", "]": "-RRB-", ">": "-RRB-"}
_BRACKETS |= {"{": "-LCB-", "}": "-RCB-"}

# Alternatives in priority order (Python takes the first that matches, where the Java lexer
# takes the longest; the order below makes the two agree on the cases listed).
_PTB_TOKEN = re.compile(
    "|".join(
        [
            r"(?P<space>\s+)",
            r"(?P<cannot>can)(?=not(?![^\W_]))",  # "cannot" -> "can" "not"
            r"(?P<nt_stem>[a-z]*[a-mo-z])(?=n't)",  # "doesn't" -> "does" "n't", "can't" -> "ca"
            r"(?P<clitic_stem>[^\W_]+)(?='(?:s|m|d|re|ve|ll)(?![^\W_]))",  # "it's" -> "it"
            r"(?P<clitic>n't|'(?:s|m|d|re|ve|ll)(?![^\W_]))",
            r"(?P<apostrophe_word>'(?:em|[2-9]0s|till?|cause|n'?)(?![^\W_]))",
            r"(?P<acronym>[^\W\d_](?:\.[^\W\d_])+\.?)",  # "u.s.", "e.g."
            rf"(?P<abbreviation>(?:{_ABBREVIATIONS}|[^\W\d_])\.)",  # "mr.", "no.", "b."
            rf"(?P<word>{_WORD})",
            r"(?P<signed_number>[-+]\d+(?:[.,:]\d+)*)",
            r"(?P<dots>\.+)",  # "." and "..." are both dropped as punctuation
            r"(?P<hyphens>-+)",
            r"(?P<question>[?!]+)",  # "?!" is one token, and not in the punctuation list
            r"(?P<quotes>[\"'`]+)",  # every quote token (``, '', `, ') is dropped
            r"(?P<bracket>[()\[\]<>{}])",
            r"(?P<other>.)",
        ]
    ),
    re.IGNORECASE | re.DOTALL,
)

_UNICODE_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2039": "'",
        "\u203a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2013": " -- ",
        "\u2014": " -- ",
        "\u2015": " -- ",
        "\u2026": "...",
        "\u00ad": None,  # soft hyphen: the lexer deletes it inside words
    }
)


def coco_tokenize(text: str) -> list[str]:
    """Tokens of `text` as pycocoevalcap sees them: PTB-tokenized, lowercased, punctuation
    dropped. "A man doesn't sit." -> ["a", "man", "does", "n't", "sit"]."""
    return list(_coco_tokens(text))


@lru_cache(maxsize=8192)  # references recur across a GRPO group and across epochs
def _coco_tokens(text: str) -> tuple[str, ...]:
    tokens = []
    for match in _PTB_TOKEN.finditer(text.translate(_UNICODE_PUNCTUATION)):
        kind, token = match.lastgroup, match.group()
        if kind in ("space", "dots", "quotes"):
            continue
        if kind == "hyphens":
            # The lexer maps 3-4 hyphens to "--"; 1-4 are then dropped, longer runs stay.
            if len(token) <= 4:
                continue
        elif kind == "bracket":
            token = _BRACKETS[token]
        elif kind == "other" and (unicodedata.category(token)[0] == "C" or token in "|\\"):
            continue  # control and format characters (zero-width space, BOM), "|", "\"
        tokens.append(token.lower())
    return tuple(t for t in tokens if t not in PUNCTUATION)


_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_score_tokenize(text: str) -> list[str]:
    """`rouge-score`'s default tokens (use_stemmer=False): lowercase, every run of characters
    outside [a-z0-9] is a separator."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


# --------------------------------------------------------------------------- BLEU


def corpus_bleu(
    candidates: Sequence[str], references: Sequence[str | Sequence[str]], max_n: int = 4
) -> list[float]:
    """Corpus BLEU-1 .. BLEU-max_n of `candidates` against their references, exactly as
    pycocoevalcap's BleuScorer with option "closest" (see the module docstring).

    `references[i]` is one string or a non-empty sequence of strings for `candidates[i]`.
    BLEU@4 is the last entry of the default call.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    pairs = _tokenized_pairs(candidates, references)
    guess, correct = [0] * max_n, [0] * max_n
    candidate_length = reference_length = 0
    for candidate, refs in pairs:
        clipped = Counter()
        for ref in refs:
            clipped |= _ngram_counts(ref, max_n)  # Counter union keeps the max count
        for ngram, count in _ngram_counts(candidate, max_n).items():
            correct[len(ngram) - 1] += min(count, clipped[ngram])
        for n in range(max_n):
            guess[n] += max(0, len(candidate) - n)
        candidate_length += len(candidate)
        reference_length += min((abs(len(r) - len(candidate)), len(r)) for r in refs)[1]

    ratio = (candidate_length + BLEU_TINY) / (reference_length + BLEU_SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for n in range(max_n):
        product *= (correct[n] + BLEU_TINY) / (guess[n] + BLEU_SMALL)
        scores.append(product ** (1 / (n + 1)) * brevity)
    return scores


def _ngram_counts(tokens: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1)
    )


def _tokenized_pairs(
    candidates: Sequence[str], references: Sequence[str | Sequence[str]]
) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    _check_corpus(candidates, references)
    return [
        (_coco_tokens(candidate), [_coco_tokens(r) for r in _reference_list(refs, i)])
        for i, (candidate, refs) in enumerate(zip(candidates, references, strict=True))
    ]


def _check_corpus(candidates: Sequence[str], references: Sequence[object]) -> None:
    if len(candidates) != len(references):
        raise ValueError(
            f"got {len(candidates)} candidates but {len(references)} reference entries"
        )
    if not candidates:
        raise ValueError("no candidates to score")


def _reference_list(references: str | Sequence[str], index: int | None = None) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        where = "" if index is None else f" for candidate {index}"
        raise ValueError(f"no reference{where}: give at least one reference string")
    return refs


# --------------------------------------------------------------------------- ROUGE-L


def rouge_l(
    candidate: str, references: str | Sequence[str], variant: str = DEFAULT_ROUGE_VARIANT
) -> float:
    """ROUGE-L of one caption against one or more references, in [0, 1].

    `variant` is "coco" (pycocoevalcap, beta 1.2, COCO tokens) or "rouge-score" (Google's
    rougeL F1, its tokens). A caption with no tokens (empty, only punctuation) scores 0.
    """
    tokenize = _rouge_tokenizer(variant)
    refs = _reference_list(references)
    candidate_tokens = tokenize(candidate)
    if not candidate_tokens:
        return 0.0
    best_precision = best_recall = best_f1 = 0.0
    for ref in refs:
        ref_tokens = tokenize(ref)
        if not ref_tokens:
            continue
        lcs = _lcs_length(ref_tokens, candidate_tokens)
        precision, recall = lcs / len(candidate_tokens), lcs / len(ref_tokens)
        best_precision, best_recall = max(best_precision, precision), max(best_recall, recall)
        if precision + recall > 0:
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    if variant == "rouge-score":
        return best_f1
    if best_precision == 0 or best_recall == 0:
        return 0.0
    beta2 = COCO_ROUGE_BETA**2
    return (1 + beta2) * best_precision * best_recall / (best_recall + beta2 * best_precision)


def corpus_rouge_l(
    candidates: Sequence[str],
    references: Sequence[str | Sequence[str]],
    variant: str = DEFAULT_ROUGE_VARIANT,
) -> float:
    """Mean per-caption ROUGE-L (how both toolkits report a corpus score)."""
    _check_corpus(candidates, references)
    scores = [rouge_l(c, r, variant) for c, r in zip(candidates, references, strict=True)]
    return sum(scores) / len(scores)


def _rouge_tokenizer(variant: str) -> Callable[[str], Sequence[str]]:
    if variant == "coco":
        return _coco_tokens
    if variant == "rouge-score":
        return rouge_score_tokenize
    raise ValueError(
        f"unknown ROUGE-L variant {variant!r}; choose one of {', '.join(ROUGE_VARIANTS)}"
    )


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel (Allison & Dix 1986, Hyyro 2004): bit i of `row` stands for a[i], and one
    pass of integer arithmetic per token of b replaces a row of the len(a) x len(b) table.
    """
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        matched = row & masks.get(token, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()
