"""Rewards of Joint-GRPO (docs/paper_facts.md#joint-grpo): format, caption ROUGE-L, video and
caption similarities."""
