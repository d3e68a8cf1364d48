"""The documentation site builds with `mkdocs build --strict`, and the README's links resolve.

mkdocs.yml's `validation:` block makes an unresolved link or anchor a warning, and --strict turns any
warning into a failed build; the second test shows that it does, on a page with a broken link. The
README is not part of the site (it links into docs/ so that it works on GitHub), so its relative links
and their anchors are checked here against the files and the built pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # no end-of-life banner in the output
    )


def _built_page(site: Path, page: Path) -> Path:
    """Where mkdocs writes a page (directory URLs): a/b.md -> a/b/index.html, a/index.md -> a/index.html."""
    folder = page.parent if page.stem == "index" else page.with_suffix("")
    return site / folder / "index.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = _build(REPO / "mkdocs.yml", out)
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def test_site_builds_strict_with_every_page_and_the_api_reference(site: Path) -> None:
    nav_pages = re.findall(r":\s*([\w/-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), flags=re.MULTILINE)
    for page in nav_pages:
        built = _built_page(site, Path(page))
        assert built.is_file(), f"{page} in the nav was not built"
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("load_many", "analyze", "InputError", "Raises"):  # generated from the docstrings
        assert name in api, f"the API reference page lacks {name}"


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The same settings on a page with a link to a missing page and one to a missing anchor."""
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "index.md").write_text(
        "# Home\n\n[gone](missing.md) and [here](#no-such-heading)\n"
    )
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"INHERIT: {REPO / 'mkdocs.yml'}\ndocs_dir: pages\nnav: [index.md]\nplugins: [search]\n"
    )
    built = _build(config, tmp_path / "site")
    assert built.returncode != 0
    assert "'missing.md'" in built.stderr and "no-such-heading" in built.stderr, built.stderr[-2000:]


def _links(markdown: str) -> list[str]:
    """Every link and image target of a Markdown text (inline and reference links alike)."""
    targets = []
    for token in MarkdownIt("commonmark").parse(markdown):
        for child in token.children or []:
            if child.type == "link_open":
                targets.append(str(child.attrs["href"]))
            elif child.type == "image":
                targets.append(str(child.attrs["src"]))
    return targets


def test_readme_links_resolve(site: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = [link for link in _links(readme) if not urlsplit(link).scheme]
    assert len(links) >= 15, links  # the README is mostly links into the site
    broken = []
    for link in links:
        parts = urlsplit(link)
        target = REPO / unquote(parts.path) if parts.path else REPO / "README.md"
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif parts.fragment and target.suffix == ".md" and target.is_relative_to(REPO / "docs"):
            html = _built_page(site, target.relative_to(REPO / "docs"))
            if f'id="{parts.fragment}"' not in html.read_text(encoding="utf-8"):
                broken.append(f"{link}: no such heading in {target.relative_to(REPO)}")
    assert not broken, "\n".join(broken)
