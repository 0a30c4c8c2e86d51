"""The predictive leak check through the offline backend, on hand-written texts: a reasoning
or question that names what only the target clip shows is flagged, rewritten once from the
input alone, and passes (a pair that still leaks is dropped: tests/test_vansdata_http.py)."""

from __future__ import annotations

from pathlib import Path

from vans.chat import CallStats, ReplyCache
from vans.vansdata.backends import OfflineBackend, target_only_terms
from vans.vansdata.prompts import Prompts
from vans.vansdata.records import Caption, Clip, Pair, Rejections
from vans.vansdata.writing import Calls, Written, check_leaks

SEEN = "A man holds a ball near a hoop."
NEXT = "The man throws the ball into a basket."


def written(pair_id: str, question: str, reasoning: str) -> Written:
    def caption(text: str, step: int) -> Caption:
        clip = Clip(f"c{step}", "v", step, Path(f"c{step}.mp4"), None, (0.0, 1.0), 1.0)
        return Caption(clip, text, True, "", {})

    pair = Pair(pair_id, caption(SEEN, 0), caption(NEXT, 1))
    return Written(pair, question, reasoning, NEXT, {})


def test_target_only_terms_are_the_targets_new_content_words() -> None:
    assert target_only_terms(SEEN, NEXT) == {"throws", "basket"}


def test_leaks_are_rewritten_or_dropped(tmp_path) -> None:
    calls = Calls(OfflineBackend(), Prompts(), ReplyCache(tmp_path / "c.db"), CallStats())
    rejections = Rejections()
    items = [
        written("clean", "What will he do?", "He holds a ball near a hoop. He will shoot."),
        written("leaky", "What will he do?", "He holds a ball. He aims at the basket."),
        written("bad-question", "Does the ball go into the basket?", "He holds a ball."),
    ]
    passed = check_leaks(items, calls, rejections)
    assert [w.pair.id for w in passed] == ["clean", "leaky", "bad-question"]
    clean, leaky, question = passed
    assert clean.reasoning == items[0].reasoning and "rewrite" not in clean.provenance
    assert leaky.reasoning == "He holds a ball."  # the sentence naming the basket is gone
    assert question.question == "What happens next?" and question.reasoning == "He holds a ball."
    assert {"leak", "rewrite", "leak_again"} <= set(leaky.provenance)
    assert rejections.items == []
    # 3 checks, 2 rewrites, 2 checks of the rewrites
    assert calls.stats.calls == 7
