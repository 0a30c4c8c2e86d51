"""Files that ship with the package: the toy world's foundation models and the trained
toy-world VANS checkpoint.

`toyworld_base/` is the base directory written by `vans reproduce toybases`: the reasoner
base (it perceives toy clips), the renderer base (it draws them from text), the judge
embedder (the toy CLIP), their resolved configs and base.json (the figures they reached).

`toyworld/` is the release directory written by `vans reproduce toyworld` (the seed-0
Joint-GRPO model, greedy captions): vans.yaml, vlm/, vdm/, results.md (the table it comes
with) and release.json (its test split and the ROUGE-L it scores there).
"""

from pathlib import Path

TOYWORLD_CHECKPOINT = Path(__file__).resolve().parent / "toyworld"
TOYWORLD_BASE = Path(__file__).resolve().parent / "toyworld_base"
