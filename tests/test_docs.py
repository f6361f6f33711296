"""The project's own pages stay inside the repository: README.md and docs/*.md link nowhere outside it, name no
machine-specific paths, and the README's Layout section names only paths that exist; LICENSE, CITATION.cff
(CFF 1.2.0 required keys) and CHANGELOG.md exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         ROOT / "dreamalloc/alloc/workloads/data/traces/README.md"]
MACHINE_PATHS = re.compile(r"(?<![\w.])/(work|tmp|home|root)/")


def outside_links(text: str) -> list[str]:
    """Markdown link targets or inline-code paths that climb out of the repository with ``../``."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"`([^`\s]*\.\./[^`\s]*)`", text)
    return [t for t in targets if t.startswith("../") and "://" not in t]


def layout_paths(readme: str) -> list[str]:
    """Paths in the left column of the README's Layout section (``a, b  description`` rows)."""
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths = []
    for line in section.splitlines():
        if not line.startswith("    ") or line.startswith("     "):
            continue  # not a row, or a continuation line of a description
        left = re.match(r"[\w./-]+(?:, [\w./-]+)*", line.strip()).group(0)  # paths, then a space and the text
        paths += left.split(", ")
    return paths


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_stay_inside_the_repository(page):
    text = page.read_text()
    rel = page.relative_to(ROOT)
    escaping = [t for t in outside_links(text) if not (ROOT / rel.parent / t).resolve().is_relative_to(ROOT)]
    assert not escaping, f"{rel} links outside the repository: {escaping}"
    bad = [f"line {i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if MACHINE_PATHS.search(line)]
    assert not bad, f"{rel} names machine-specific paths (write them from the repository root): {bad}"


def test_checks_catch_what_they_should():
    assert outside_links("see [design](../shared/DESIGN.md) and `../shared/REFERENCE.md`") == [
        "../shared/DESIGN.md", "../shared/REFERENCE.md"]
    assert MACHINE_PATHS.search("cd /tmp/runs") and MACHINE_PATHS.search("python /work/main/train.py")
    assert not MACHINE_PATHS.search("outputs/tmp/x and dreamalloc/alloc/workloads/data")
    layout = "## Layout\n\n    a/, b.py  text, more\n    long/name/ text\n           not.py\n\n## Next\n    c/  x\n"
    assert layout_paths(layout) == ["a/", "b.py", "long/name/"]


def test_readme_layout_names_existing_paths():
    readme = (ROOT / "README.md").read_text()
    paths = layout_paths(readme)
    assert len(paths) >= 10, f"README Layout section not found or too short: {paths}"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README Layout names paths that do not exist: {missing}"
    packages = {f"dreamalloc/{d.name}/" for d in (ROOT / "dreamalloc").iterdir() if (d / "__init__.py").exists()}
    assert not packages - set(paths), f"README Layout misses packages: {sorted(packages - set(paths))}"


def test_license_citation_changelog():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "version", "date-released"):
        assert cff.get(key), f"CITATION.cff lacks {key!r}"
    assert cff["cff-version"] == "1.2.0"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert str(cff["version"]) == version, "CITATION.cff version differs from pyproject.toml"
    for ref in cff.get("references", []):
        assert ref.get("type") and ref.get("title") and ref.get("authors"), f"incomplete reference: {ref}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{version}]" in changelog
