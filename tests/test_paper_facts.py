"""docs/paper_facts.md is where the code's citations of the papers point: every citation in
the repository, and every link inside the page, must name one of its sections."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "paper_facts.md"
CITATION = re.compile(r"docs/paper_facts\.md#([\w-]+)")
PAGE_LINK = re.compile(r"\]\(#([\w-]+)\)")
SEARCHED = ("src", "tests", "benchmarks", "configs", "docs")
SUFFIXES = {".py", ".md", ".yaml", ".toml"}


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> set[str]:
    return {
        github_slug(line.lstrip("#"))
        for line in PAGE.read_text().splitlines()
        if line.startswith("#")
    }


def text_files() -> list[Path]:
    files = [ROOT / "ARCHITECTURE.md", ROOT / "README.md"]
    for folder in SEARCHED:
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.suffix in SUFFIXES]
    return files


def citations(pattern: re.Pattern[str], files: list[Path]) -> list[tuple[str, str]]:
    """(file:line, anchor) of every match of `pattern` in `files`."""
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            found += [(where, anchor) for anchor in pattern.findall(line)]
    return found


def test_every_citation_of_the_page_names_one_of_its_sections():
    cited = citations(CITATION, text_files())
    # The modules of the models, rewards, GRPO and both stages cite the page.
    assert len({anchor for _, anchor in cited}) >= 10
    assert [c for c in cited if c[1] not in sections()] == []


def test_links_inside_the_page_name_its_sections():
    links = citations(PAGE_LINK, [PAGE])
    assert links
    assert [link for link in links if link[1] not in sections()] == []


def test_nothing_cites_the_spec_outside_the_repository():
    # The facts used to be cited as sections of a SPEC document that is not in the
    # repository; the marker is split so that this file does not match itself.
    marker = "SPEC" + " §"
    stale = [f"{p.relative_to(ROOT)}" for p in text_files() if marker in p.read_text()]
    assert stale == []
