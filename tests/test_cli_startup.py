"""`vans --help` and the commands that load no model must not import the model stack (torch
alone takes seconds): checked in a fresh interpreter, which modules each one imported.
benchmarks/cli_startup.py prints how long they take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vans.data.toyworld import ToyWorldConfig, write_toyworld

HEAVY = ("torch", "transformers", "diffusers", "peft", "accelerate")

PROBE = f"""
import json, sys
from vans.cli.main import run
code = run(sys.argv[1:])
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def imported(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, check=False
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("startup")
    return str(write_toyworld(ToyWorldConfig(num=2, size=(32, 32)), out))


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    row = {"problem": "How many?", "problem_type": "numerical", "data_type": "video"}
    row |= {"solution": "<answer>3</answer>", "path": "v.mp4"}
    path = tmp_path_factory.mktemp("qa") / "rows.json"
    path.write_text(json.dumps([row]))
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["data", "--help"],
        ["data", "validate", "{m}"],
        ["data", "build", "--help"],
        ["data"],
        ["qa", "validate", "{q}"],
    ],
)
def test_commands_without_models_import_no_model_library(
    args: list[str], manifest: str, qa_file: str
) -> None:
    result = imported([a.format(m=manifest, q=qa_file) for a in args])
    assert result["heavy"] == [] and result["code"] in (0, 2)


def test_a_model_command_still_loads_its_libraries(manifest: str) -> None:
    """The probe sees imports: `predict --help` pulls its own stack in."""
    result = imported(["predict", "--help"])
    assert result["code"] == 0 and "torch" in result["heavy"]
