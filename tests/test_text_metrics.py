"""BLEU and ROUGE-L against rouge-score, sacrebleu and hand-computed COCO-toolkit values."""

from __future__ import annotations

import math
import random

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from vans.evaluation.text_metrics import (
    ROUGE_VARIANTS,
    _lcs_length,
    coco_tokenize,
    corpus_bleu,
    corpus_rouge_l,
    rouge_l,
    rouge_score_tokenize,
)

# --------------------------------------------------------------------------- tokenizer

PTB_CASES = [
    ("A man doesn't like it.", ["a", "man", "does", "n't", "like", "it"]),
    (
        "I can't believe it's 3.5 o'clock!",
        ["i", "ca", "n't", "believe", "it", "'s", "3.5", "o'clock"],
    ),
    ("The dog's ball, the cats' toys", ["the", "dog", "'s", "ball", "the", "cats", "toys"]),
    (
        "I cannot go; we'll see: you're fine.",
        ["i", "can", "not", "go", "we", "'ll", "see", "you", "'re", "fine"],
    ),
    ("CANNOT DON'T WON'T I'm", ["can", "not", "do", "n't", "wo", "n't", "i", "'m"]),
    ("A well-known 3-year-old -- yes...", ["a", "well-known", "3-year-old", "yes"]),
    ("U.S. cars cost $1,000 at 10:30", ["u.s.", "cars", "cost", "$", "1,000", "at", "10:30"]),
    (
        "Mr. Smith met Dr. Jones, e.g. today.",
        ["mr.", "smith", "met", "dr.", "jones", "e.g.", "today"],
    ),
    # Abbreviations keep their period; capitalised-only ones (state names) only when capitalised.
    (
        "He said no. Plan B. Wash. or wash.",
        ["he", "said", "no.", "plan", "b.", "wash.", "or", "wash"],
    ),
    ('He said, "Hello there".', ["he", "said", "hello", "there"]),
    # Lowercasing happens after PTB escaping, so brackets survive as -lrb- / -rrb- tokens.
    ("a cat (black) [sic]", ["a", "cat", "-lrb-", "black", "-rrb-", "-lrb-", "sic", "-rrb-"]),
    ("It\u2019s \u201cquoted\u201d \u2014 ok\u2026", ["it", "'s", "quoted", "ok"]),
    ("what?! wow!!!", ["what", "?!", "wow", "!!!"]),
    (
        "rock 'n' roll with 'em in the '90s",
        ["rock", "'n'", "roll", "with", "'em", "in", "the", "'90s"],
    ),
    ("mother-in-law's black/white car", ["mother-in-law", "'s", "black/white", "car"]),
    ("-5 degrees, ----- then --- and -", ["-5", "degrees", "-----", "then", "and"]),
    ("zero\u200bwidth | pipe", ["zero", "width", "pipe"]),
    ("", []),
    (" . , ; : ! ? ", []),
]


@pytest.mark.parametrize(("text", "expected"), PTB_CASES)
def test_coco_tokenizer_follows_ptb_rules(text: str, expected: list[str]) -> None:
    assert coco_tokenize(text) == expected


def test_rouge_score_tokenizer_matches_the_package() -> None:
    from rouge_score.tokenize import tokenize

    for text, _ in PTB_CASES:
        assert rouge_score_tokenize(text) == tokenize(text, None)


# --------------------------------------------------------------------------- ROUGE-L

ROUGE_PAIRS: list[tuple[str, str | list[str]]] = [
    ("A man is riding a bike.", "A man rides a bicycle down the street."),
    ("the cat sat on the mat", "the cat is on the mat"),
    ("The cat sat on the mat.", "THE CAT SAT ON THE MAT"),
    ("a dog", "a dog"),
    ("a dog", "a cat"),
    ("two dogs play with 3 balls", "2 dogs play with three balls"),
    ("He doesn't stop; he keeps going!", "he does not stop, he keeps on going"),
    ("a well-known 3-year-old runs", "the 3 year old runs well"),
    ("The box falls, then bounces twice.", "the box falls and bounces two times"),
    ("red cube pushes blue sphere", "blue sphere pushes red cube"),
    ("", "a red ball"),
    ("a red ball", ""),
    ("...", "a red ball"),
    ("!!! ???", "!!!"),
    ("It's 10:30 and the U.S. team won 2-1", "at 10:30 the us team won 2 to 1"),
    ("café naïve résumé", "cafe naive resume"),
    ("the the the the", "the cat"),
    ("next the stack gets a green block on top", "a green block is placed on top of the stack"),
    ("the ball hits the wall and bounces back", "the ball bounces back after hitting the wall"),
    ("a b c d e f g h i j k l m n o p", "p o n m l k j i h g f e d c b a"),
    ("She opens the door (slowly).", "she slowly opens the door"),
    ("the glass fills up with water to the brim", "water fills the glass to the brim"),
    ("the man picks up the knife and cuts the bread", "the man cuts the bread with the knife"),
    ("the car turns left at the crossing", "at the crossing the car turns left"),
    ("a man rides a red bike", ["a man rides", "a man rides a red bike down the long road today"]),
    ("a dog barks", ["a cat meows", "a dog barks loudly", "dogs bark"]),
    ("a dog barks", ["", "a dog"]),
    ("", ["a dog", "a cat"]),
    ("the red block falls", ["the blue block falls", "the red block", "red block falls down"]),
    ("Then, the sprite moves right.", ["the sprite moves to the right", "next it moves right"]),
    ("purple circle", ["a purple circle slides", "circle purple"]),
    ("numbers 1 2 3 4", ["numbers 4 3 2 1", "1 2 3 4"]),
    ("the person pours the milk into the bowl", ["milk is poured into a bowl", "she pours milk"]),
    ("sort the cards by color", ["the cards are sorted by colour", "sorting cards by color"]),
    ("the stack grows by one block", ["one more block is added", "the stack grows"]),
    ("ok", ["OK!", "o.k."]),
]


@pytest.mark.parametrize(("candidate", "references"), ROUGE_PAIRS)
def test_rouge_score_variant_matches_rouge_score_package(
    candidate: str, references: str | list[str]
) -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    if isinstance(references, str):
        expected = scorer.score(references, candidate)["rougeL"].fmeasure
    else:
        expected = scorer.score_multi(references, candidate)["rougeL"].fmeasure
    assert rouge_l(candidate, references, "rouge-score") == pytest.approx(expected, abs=1e-12)


def test_corpus_rouge_l_is_the_mean_of_rouge_score_f1() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    candidates = [c for c, _ in ROUGE_PAIRS]
    references = [r for _, r in ROUGE_PAIRS]
    expected = sum(
        scorer.score_multi([r] if isinstance(r, str) else r, c)["rougeL"].fmeasure
        for c, r in ROUGE_PAIRS
    ) / len(ROUGE_PAIRS)
    assert corpus_rouge_l(candidates, references, "rouge-score") == pytest.approx(
        expected, abs=1e-12
    )


def test_coco_rouge_l_uses_beta_1_2_on_a_hand_worked_lcs() -> None:
    # LCS("the cat sat on the mat", "the cat on mat") = 4: P = 4/6, R = 4/4.
    # F1 = 2 P R / (P + R) = 0.8; COCO: (1 + 1.44) P R / (R + 1.44 P) = 4.88 / 5.88.
    candidate, reference = "the cat sat on the mat", "the cat on mat"
    assert rouge_l(candidate, reference, "rouge-score") == pytest.approx(0.8, abs=1e-12)
    assert rouge_l(candidate, reference, "coco") == pytest.approx(4.88 / 5.88, abs=1e-12)


def test_coco_rouge_l_maximises_precision_and_recall_separately() -> None:
    # ref 1: LCS 3, P = 3/6, R = 1; ref 2: LCS 6, P = 1, R = 6/11.
    # COCO takes max P = 1 and max R = 1 from different references -> 1.0;
    # rouge-score takes the best F1 of one reference: 2 * (6/11) / (1 + 6/11) = 12/17.
    candidate = "a man rides a red bike"
    references = ["a man rides", "a man rides a red bike down the long road today"]
    assert rouge_l(candidate, references, "coco") == pytest.approx(1.0, abs=1e-12)
    assert rouge_l(candidate, references, "rouge-score") == pytest.approx(12 / 17, abs=1e-12)


def test_coco_rouge_l_counts_ptb_tokens() -> None:
    # COCO tokens: does n't stop / does not stop -> LCS 2 of 3; rouge-score: doesn t stop.
    assert rouge_l("Doesn't stop.", "does not stop", "coco") == pytest.approx(2 / 3, abs=1e-12)
    assert rouge_l("Doesn't stop.", "does not stop", "rouge-score") == pytest.approx(
        2 * (1 / 3) * (1 / 3) / (2 / 3), abs=1e-12
    )


@pytest.mark.parametrize("variant", ROUGE_VARIANTS)
@pytest.mark.parametrize("candidate", ["", "   ", "...", "\x00\x01\u200b", "\U0001f600 \u2603"])
def test_rouge_l_scores_empty_or_garbled_captions_zero(candidate: str, variant: str) -> None:
    assert rouge_l(candidate, ["a red ball rolls", "\x00"], variant) == 0.0


def test_rouge_l_rejects_unknown_variant_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'rouge-1'.*coco, rouge-score"):
        rouge_l("a", "a", "rouge-1")
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l("a", [], "coco")


def test_lcs_length_matches_dynamic_programming() -> None:
    def table_lcs(a: list[str], b: list[str]) -> int:
        row = [0] * (len(b) + 1)
        for x in a:
            previous_diagonal = 0
            for j, y in enumerate(b, start=1):
                previous_diagonal, row[j] = (
                    row[j],
                    (previous_diagonal + 1 if x == y else max(row[j], row[j - 1])),
                )
        return row[-1]

    rng = random.Random(0)
    for _ in range(300):
        a = rng.choices("abcde", k=rng.randint(0, 70))
        b = rng.choices("abcde", k=rng.randint(0, 70))
        assert _lcs_length(a, b) == table_lcs(a, b)


# --------------------------------------------------------------------------- BLEU

# Pre-tokenized, lowercase, punctuation-free: COCO tokens are the whitespace split, and every
# n-gram order matches at least once, so sacrebleu (tokenize="none", no smoothing) computes
# the same quantities. Both pick each candidate's closest reference length with ties going to
# the shorter one (candidate 1 ties 8 vs 10 tokens); the candidates are 1 token short overall.
BLEU_CANDIDATES = [
    "a man rides a red bike down the road",
    "the cat sits",
    "the box falls off the table",
    "then the green block is stacked on the red",
]
BLEU_REFERENCES = [
    ["a man rides a bike down the street", "a man on a red bike rides down a road"],
    ["the cat sits on the mat", "a cat is sitting on a mat"],
    ["the box falls off", "the box slides and falls off"],
    ["next a green block is stacked on top", "the green block goes on the red block"],
]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_corpus_bleu_matches_sacrebleu_where_definitions_coincide(order: int) -> None:
    bleu = BLEU(tokenize="none", smooth_method="none", force=True, max_ngram_order=order)
    streams = [list(refs) for refs in zip(*BLEU_REFERENCES, strict=True)]
    expected = bleu.corpus_score(BLEU_CANDIDATES, streams)
    assert expected.bp < 1  # the brevity penalty is exercised
    ours = corpus_bleu(BLEU_CANDIDATES, BLEU_REFERENCES, max_n=4)
    assert ours[order - 1] == pytest.approx(expected.score / 100, rel=1e-8)
    assert corpus_bleu(BLEU_CANDIDATES, BLEU_REFERENCES, max_n=order) == pytest.approx(
        ours[:order], rel=1e-12
    )


def test_zero_four_gram_match_gives_coco_a_tiny_positive_bleu4_and_sacrebleu_zero() -> None:
    candidates, references = ["a dog runs fast"], ["a dog runs away"]
    # 1..4-gram matches 3/4, 2/3, 1/2, 0/1; equal lengths -> no brevity penalty.
    # BLEU-4 = (3/4 * 2/3 * 1/2 * 1e-15 / 1) ** (1/4) = (2.5e-16) ** 0.25 ~ 1.2574e-4.
    scores = corpus_bleu(candidates, references)
    assert scores[0] == pytest.approx(3 / 4, rel=1e-8)
    assert scores[1] == pytest.approx(math.sqrt(3 / 4 * 2 / 3), rel=1e-8)
    assert scores[2] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3), rel=1e-8)
    assert scores[3] == pytest.approx(2.5e-16**0.25, rel=1e-8)
    assert scores[3] == pytest.approx(1.2574e-4, rel=1e-4)
    sacre = BLEU(tokenize="none", smooth_method="none", force=True)
    assert sacre.corpus_score(candidates, [references]).score == 0.0


def test_bleu_brevity_penalty_and_clipping_by_hand() -> None:
    # c = 2, r = 6: BP = exp(1 - 6/2) = e^-2; both n-gram orders fully matched.
    assert corpus_bleu(["the cat"], ["the cat sat on the mat"], max_n=2)[1] == pytest.approx(
        math.exp(-2), rel=1e-8
    )
    # "the" x4 is clipped to its max count in one reference (2): p1 = 2/4; the closest
    # reference length is 3 < 4, so no brevity penalty.
    clipped = corpus_bleu(["the the the the"], [["the cat", "the the dog"]], max_n=1)
    assert clipped[0] == pytest.approx(0.5, rel=1e-8)


def test_bleu_closest_reference_length_ties_to_the_shorter() -> None:
    # Length 5 is 1 away from both 4 and 6; taking 4 means no brevity penalty (6 would give
    # exp(1 - 6/5) = 0.82).
    scores = corpus_bleu(
        ["one two three four five"], [["one two three four", "one two three four five six"]]
    )
    assert scores[0] == pytest.approx(1.0, rel=1e-8)


def test_bleu_coco_tokenizes_before_counting() -> None:
    # "Doesn't." -> "does n't": punctuation and case do not count against the candidate.
    assert corpus_bleu(["A dog doesn't bark."], ["a dog does n't bark"])[3] == pytest.approx(
        1.0, rel=1e-8
    )


def test_bleu_of_empty_candidates_is_zero_and_bad_input_is_rejected() -> None:
    assert corpus_bleu([""], ["a cat"]) == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference for candidate 0"):
        corpus_bleu(["a"], [[]])
    with pytest.raises(ValueError, match="no candidates"):
        corpus_bleu([], [])
