"""VideoP2R's PA-GRPO (vans.training.pa_grpo) and SFT on traces (vans.training.sft_cot) on
the tiny reasoner and the toy video-QA benchmark: the per-process advantage math against
hand-computed values, each process's advantage on its own tokens (and the ablations' and
GRPO's assignments), short runs that save, reload and resume exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vans.errors import ConfigError, GRPOError
from vans.models.vlm import Completion, Reasoner
from vans.rl.advantages import process_advantages
from vans.rl.config import GRPOConfig
from vans.rl.policy import groups_loss, record_logprobs
from vans.training.config import TrainConfig
from vans.training.loop import train
from vans.training.pa_grpo import PAGRPOConfig, build_pa_grpo_task
from vans.training.sft_cot import SFTCoTConfig, build_sft_cot_task
from vans.videoqa.prompting import format_trace
from vans.videoqa.rows import load_rows

EPS = 1e-4


def test_process_advantages_hand_computed() -> None:
    perception = torch.tensor([1.0, 1.0, 0.0, 0.0])  # mean 0.5, unbiased std sqrt(1/3)
    reasoning = torch.tensor([2.0, 0.0, 0.0, 0.0])  # mean 0.5, unbiased std 1
    a_p = (perception - 0.5) / (math.sqrt(1 / 3) + EPS)
    a_r = (reasoning - 0.5) / (1 + EPS)
    out = process_advantages(perception, reasoning)
    torch.testing.assert_close(out["perception"], a_p)
    torch.testing.assert_close(out["reasoning"], a_r)
    torch.testing.assert_close(out["all"], a_p + a_r)
    joined = process_advantages(perception, reasoning, separate_tokens=False)
    assert all(torch.allclose(joined[k], a_p + a_r) for k in ("perception", "reasoning", "all"))
    # GRPO: one advantage of the summed reward [3, 1, 0, 0] (mean 1, unbiased std sqrt(2)).
    total = (torch.tensor([3.0, 1.0, 0.0, 0.0]) - 1) / (math.sqrt(2) + EPS)
    seq = process_advantages(perception, reasoning, mode="sequence")
    assert all(torch.allclose(seq[k], total) for k in ("perception", "reasoning", "all"))
    # A dropped process's tokens take the other process's advantage.
    alone = process_advantages(None, reasoning)
    assert all(torch.allclose(alone[k], a_r) for k in ("perception", "reasoning", "all"))
    # A failed judgment (NaN) is out of the group's statistics and gets 0.
    nan = process_advantages(torch.tensor([1.0, math.nan, 0.0]), torch.zeros(3))
    torch.testing.assert_close(
        nan["perception"], torch.tensor([1.0, 0.0, -1.0]) * 0.5 / (math.sqrt(0.5) + EPS)
    )
    with pytest.raises(GRPOError, match="needs the perception or the reasoning"):
        process_advantages(None, None)
    with pytest.raises(GRPOError, match="two \\(G,\\) tensors"):
        process_advantages(torch.zeros(3), torch.zeros(4))


def make_config(tiny_checkpoint, toy_qa, out=None, **kwargs) -> PAGRPOConfig:
    train = TrainConfig(
        out_dir=str(out or "unused"), steps=2, batch_size=2, lr=1e-3, warmup_steps=0, log_every=1
    )
    defaults = dict(
        reasoner=str(tiny_checkpoint / "vlm"),
        train_rows=[str(toy_qa / "train" / "rows.json")],
        grpo=GRPOConfig(group_size=4),
        max_new_tokens=24,
        cache_items=True,
        train=train,
    )
    return PAGRPOConfig(**{**defaults, **kwargs})


def completion(reasoner: Reasoner, text: str) -> Completion:
    ids = reasoner.tokenizer(text, add_special_tokens=False)["input_ids"]
    return Completion(text, torch.tensor([*ids, reasoner.im_end_id]), True)


def test_each_process_takes_its_advantage_on_its_tokens(tiny_checkpoint, toy_qa) -> None:
    """Four answers to one question: right; right observation, wrong answer; an
    observation missing a needed fact, right answer; no template. The judge and the rules
    score them, and each block's tokens carry its process's advantage."""
    task = build_pa_grpo_task(make_config(tiny_checkpoint, toy_qa))
    prompt = next(p for p in task.train_dataset() if p.row.data_source == "toyworld/objects")
    row = prompt.row
    wrong = str(int(row.answer) + 1)
    missing = ". ".join(s for s in row.observation.split(". ") if row.extra["needs"][0][0] not in s)
    texts = [
        row.output,
        format_trace(row.observation, row.process, wrong),
        format_trace(missing, row.process, row.answer),
        f"There are {row.answer}.",
    ]
    group = task.score(prompt, [completion(task.reasoner, t) for t in texts])
    r = group.rewards
    assert r["perception"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert r["format"].tolist() == [1.0, 1.0, 1.0, 0.0]
    # "numerical": 1 - relative error; the template-less answer is read from the whole text.
    assert r["accuracy"][[0, 2, 3]].tolist() == [1.0, 1.0, 1.0]
    assert r["accuracy"][1] == pytest.approx(1 - 1 / int(row.answer))
    assert r["length/perception"].sum() == r["length/reasoning"].sum() == 0  # short traces
    a = process_advantages(r["process/perception"], r["process/reasoning"])
    for i in range(3):  # the well-formed answers: observation tokens vs think/answer tokens
        n = group.block_tokens[i]
        adv = group.token_advantages[i]
        assert n["observation"] > 0 and n["think"] > 0 and n["answer"] > 0
        observation = adv[: n["observation"]]
        torch.testing.assert_close(observation, a["perception"][i].expand_as(observation))
        reasoning = adv[n["observation"] : n["observation"] + n["think"] + n["answer"]]
        torch.testing.assert_close(reasoning, a["reasoning"][i].expand_as(reasoning))
    # The template-less answer's tokens are in neither block: they take the sum.
    last = group.token_advantages[3][: len(group.completions[3].token_ids)]
    torch.testing.assert_close(last, a["all"][3].expand_as(last))

    grpo = build_pa_grpo_task(make_config(tiny_checkpoint, toy_qa, advantage="sequence"))
    flat = grpo.score(prompt, group.completions)
    for i in range(4):
        row_adv = flat.token_advantages[i][: len(flat.completions[i].token_ids)]
        assert torch.allclose(row_adv, row_adv[0].expand_as(row_adv))


def test_the_loss_on_scored_answers_trains_every_part_through_the_video(
    tiny_checkpoint, toy_qa
) -> None:
    """The random reasoner's own samples all score 0 (no advantage, no gradient), so the
    update is checked on scored answers: the loss reaches every part, the vision tower
    included, so the video is in the loss forward."""
    task = build_pa_grpo_task(make_config(tiny_checkpoint, toy_qa))
    prompt = next(p for p in task.train_dataset() if p.row.problem_type == "multiple choice")
    row = prompt.row
    other = next(o[0] for o in row.options if o[0] != row.answer)
    texts = [row.output, format_trace(row.observation, row.process, other), "no idea", row.output]
    group = task.score(prompt, [completion(task.reasoner, t) for t in texts])
    record_logprobs(group, task._logprobs, task.num_iterations, task.reference)
    task.model.zero_grad()
    out = groups_loss([group], task._logprobs, task.config.grpo, "grpo", 64)
    out["loss"].backward()
    grads = {n: p.grad for n, p in task.model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for n, g in grads.items() if ".visual." in f".{n}")
    assert out["kl"] == 0  # the first update is on-policy


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_short_run_saves_and_resumes_exactly(tiny_checkpoint, toy_qa, tmp_path) -> None:
    config = make_config(tiny_checkpoint, toy_qa, tmp_path / "run")
    task = build_pa_grpo_task(config)
    start = task.model.state_dict()
    result = train(task, config.train)
    rows = read_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/accuracy", "reward/format", "judge/judged", "length/observation_tokens"):
        assert math.isfinite(rows[0][key]), key
    assert rows[0]["judge/judged"] == 2 * 4  # every completion of the batch, this step's
    reloaded = Reasoner.from_pretrained(result.final_dir)
    trained = reloaded.model.state_dict()
    assert trained.keys() == start.keys()

    first = make_config(tiny_checkpoint, toy_qa, tmp_path / "resumed")
    first.train.steps = 1
    train(build_pa_grpo_task(first), first.train)
    again = make_config(tiny_checkpoint, toy_qa, tmp_path / "resumed")
    train(build_pa_grpo_task(again), again.train, resume=True)
    resumed = read_rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [1, 2]
    for key in ("loss", "reward/accuracy", "grad_norm"):
        assert resumed[1][key] == pytest.approx(rows[1][key], rel=1e-5, abs=1e-9), key


def test_bad_configs_are_named(tiny_checkpoint, toy_qa) -> None:
    with pytest.raises(ConfigError, match="cannot both be off"):
        make_config(tiny_checkpoint, toy_qa, perception_reward=False, reasoning_reward=False)
    with pytest.raises(ConfigError, match="advantage must be process or sequence"):
        make_config(tiny_checkpoint, toy_qa, advantage="token")
    with pytest.raises(ConfigError, match="train_mode lora needs a LoRA adapter"):
        build_pa_grpo_task(make_config(tiny_checkpoint, toy_qa, train_mode="lora"))


def test_sft_on_traces_learns_the_template(tiny_checkpoint, toy_qa, tmp_path) -> None:
    """A few full-parameter steps on the teacher's traces lower the held-out loss; the saved
    reasoner loads and the rows it trained on are the traces'."""
    train_cfg = TrainConfig(
        out_dir=str(tmp_path / "sft"), steps=12, batch_size=4, lr=3e-3, warmup_steps=0,
        log_every=1, eval_every=12, eval_samples=8,
    )  # fmt: skip
    config = SFTCoTConfig(
        reasoner=str(tiny_checkpoint / "vlm"),
        train_rows=[str(toy_qa / "train" / "rows.json")],
        eval_rows=[str(toy_qa / "test" / "rows.json")],
        cache_videos=True,
        train=train_cfg,
    )
    task = build_sft_cot_task(config)
    item = task.train_dataset()[0]
    assert (
        task.reasoner.tokenizer.decode(item["target_ids"][:-1])
        == load_rows(config.train_rows)[0].output
    )
    result = train(task, config.train)
    rows = read_rows(tmp_path / "sft")
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    assert Reasoner.from_pretrained(result.final_dir).system_prompt == task.reasoner.system_prompt
