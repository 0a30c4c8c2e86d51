"""Every shipped YAML config loads into its stage's dataclass (no stale or misspelt field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vans.errors import ConfigError
from vans.training.base_reasoner import BaseReasonerConfig
from vans.training.config import load_config
from vans.training.joint_grpo_vdm import JointGRPOVDMConfig
from vans.training.joint_grpo_vlm import JointGRPOVLMConfig
from vans.training.pa_grpo import PAGRPOConfig
from vans.training.sft_cot import SFTCoTConfig
from vans.training.sft_vdm import SFTVDMConfig
from vans.training.sft_vlm import SFTVLMConfig
from vans.training.vae import VAEConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGES = {
    "sft_vlm": SFTVLMConfig,
    "sft_vdm": SFTVDMConfig,
    "vae": VAEConfig,
    "joint_grpo_stage1": JointGRPOVLMConfig,
    "joint_grpo_stage2": JointGRPOVDMConfig,
    "base_reasoner": BaseReasonerConfig,
    "base_reasoner_more": BaseReasonerConfig,
    "base_reasoner_shape": BaseReasonerConfig,
    "base_renderer_vae": VAEConfig,
    "base_renderer_vae_long": VAEConfig,
    "base_renderer_t2v": SFTVDMConfig,
    "sft_cot": SFTCoTConfig,
    "pa_grpo": PAGRPOConfig,
}


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(CONFIGS.glob("*/*.yaml")) if p.stem in STAGES],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_config_loads(path: Path):
    config = load_config(STAGES[path.stem], path, [])
    assert config.train.steps >= 1


def test_every_training_config_is_covered():
    """A new stage config must be added to STAGES (vans.yaml is the inference settings)."""
    stems = {p.stem for p in CONFIGS.glob("*/*.yaml")} - {"vans"}
    assert stems <= set(STAGES)


def test_an_override_can_set_one_entry_of_a_mapping_field():
    path = CONFIGS / "toy" / "joint_grpo_stage2.yaml"
    config = load_config(JointGRPOVDMConfig, path, ["grpo.reward_weights.r_c2=0"])
    assert config.grpo.reward_weights == {"r_c2": 0.0}
    with pytest.raises(ConfigError, match=r"grpo.reward_weights takes one key"):
        load_config(JointGRPOVDMConfig, path, ["grpo.reward_weights.r_c2.x=0"])
