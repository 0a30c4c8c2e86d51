"""VANS-Data: VNEP training data from annotated videos (docs/vansdata.md).

annotations (COIN, YouCook2, ActivityNet Captions, pairs tables) -> cut -> caption ->
pair -> write -> leak check -> manifest + report (`build.build`, `vans data build`).
"""
