"""VideoP2R's rule rewards of one completion (docs/videop2r.md#rewards), grouped by the
process they judge; the perception judge's reward is `vans.videoqa.judge`'s.

- accuracy (reasoning): `vans.videoqa.accuracy.accuracy` of the answer block.
- format (reasoning): 1 iff the completion is exactly the three blocks (`parse_trace`).
- length, per process: `RewardConfig.length_weight` when the process's blocks hold a
  number of tokens inside its band (perception 128-320, reasoning 320-512: the paper's),
  paid only when accuracy and format are both non-zero, so length is never worth more
  than being right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vans.errors import ConfigError
from vans.videoqa.accuracy import NUMERICAL_RULES, NumericalRule, accuracy
from vans.videoqa.prompting import PERCEPTION, REASONING, parse_trace
from vans.videoqa.rows import QARow


@dataclass
class RewardConfig:
    """The rule rewards' settings."""

    perception_length: tuple[int, int] = (128, 320)
    """Tokens of the observation block the length reward pays for (paper)."""
    reasoning_length: tuple[int, int] = (320, 512)
    """Tokens of the think and answer blocks the length reward pays for (paper)."""
    length_weight: float = 0.2
    """The length reward's value; unstated in the paper, Video-R1's bonus (0.2)."""
    numerical: NumericalRule = "relative"
    """How "numerical" answers score: the paper's relative error, or Video-R1's "exact"."""

    def __post_init__(self) -> None:
        for name in ("perception_length", "reasoning_length"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"{name} must be [low, high] with 0 <= low <= high")
            setattr(self, name, (int(low), int(high)))
        if self.length_weight < 0:
            raise ConfigError(f"length_weight must be >= 0, got {self.length_weight}")
        if self.numerical not in NUMERICAL_RULES:
            raise ConfigError(f"numerical must be one of {', '.join(NUMERICAL_RULES)}")


def rule_rewards(
    completion: str, row: QARow, block_tokens: Mapping[str, int], config: RewardConfig
) -> dict[str, float]:
    """The rule rewards of one completion for `row`: "accuracy", "format",
    "length/perception" and "length/reasoning". `block_tokens[name]` is the number of
    completion tokens in each block ("observation", "think", "answer"; absent = 0)."""
    parsed = parse_trace(completion)
    acc = accuracy(row.problem_type, parsed.answer, row.answer, row.options, config.numerical)
    fmt = float(parsed.well_formed)
    paid = acc > 0 and fmt > 0
    out = {"accuracy": acc, "format": fmt}
    for process, blocks, (low, high) in (
        ("perception", PERCEPTION, config.perception_length),
        ("reasoning", REASONING, config.reasoning_length),
    ):
        tokens = sum(block_tokens.get(b, 0) for b in blocks)
        out[f"length/{process}"] = config.length_weight * float(paid and low <= tokens <= high)
    return out
