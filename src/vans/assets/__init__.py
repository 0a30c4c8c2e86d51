"""Files that ship with the package: the trained toy-world VANS checkpoint.

`toyworld/` is the release directory written by `vans reproduce toyworld` (the seed-0
Joint-GRPO model, greedy captions): vans.yaml, vlm/, vdm/, results.md (the table it comes
with) and release.json (its test split and the ROUGE-L it scores there).
"""

from pathlib import Path

TOYWORLD_CHECKPOINT = Path(__file__).resolve().parent / "toyworld"
