"""Evaluation: text and video metrics, the video-text embedders behind CLIP-V/CLIP-T (and
the Joint-GRPO rewards), and the `vans eval` runner."""
