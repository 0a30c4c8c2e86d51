"""Reinforcement learning for VANS: GRPO math, Flow-GRPO sampling and the Joint-GRPO stages."""
