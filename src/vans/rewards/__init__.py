"""Rewards of Joint-GRPO (SPEC §2): format, caption ROUGE-L, video and caption similarities."""
