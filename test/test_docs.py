"""The README and docs/ cite only what the repository contains: every link into docs/ (from the README) and between the
pages of docs/ reaches a file and, with an anchor, one of its headings; no citation of a design note that is not in the
repository."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def assert_link_resolves(source: Path, target: Path, anchor: str) -> None:
    assert target.is_file(), f'{source.name} links to {target.relative_to(REPO)}, which is not in the repository'
    if anchor:
        headings = re.findall(r'^#+ (.+)$', target.read_text(), re.M)
        assert anchor in {github_anchor(h) for h in headings}, f'{target.name}#{anchor}: no such heading'


def test_readme_links_into_docs_resolve():
    readme = REPO / 'README.md'
    links = re.findall(r'\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)', readme.read_text())
    assert {path for path, _ in links} >= {'docs/algorithm.md', 'docs/push.md'}, 'the README links to both docs pages'
    for path, anchor in links:
        assert_link_resolves(readme, REPO / path, anchor)


def test_links_between_docs_pages_resolve():
    pages = sorted((REPO / 'docs').glob('*.md'))
    links = [(page, path, anchor) for page in pages
             for path, anchor in re.findall(r'\]\(([\w.-]+\.md)(?:#([^)\s]+))?\)', page.read_text())]
    assert links, 'docs/algorithm.md links to push.md'
    for page, path, anchor in links:
        assert_link_resolves(page, page.parent / path, anchor)


def test_no_citation_outside_the_repository():
    for path in [REPO / 'README.md', *REPO.glob('swfp_ros/**/*.py'), *REPO.glob('docs/*.md')]:
        assert 'ALGORITHM.md' not in path.read_text(), f'{path.relative_to(REPO)} cites ALGORITHM.md (not in the repo)'
