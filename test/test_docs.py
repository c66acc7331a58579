"""The README cites only what the repository contains: every link into docs/ reaches a file and, with an anchor, one of
its headings; no citation of a design note that is not in the repository."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_readme_links_into_docs_resolve():
    readme = (REPO / 'README.md').read_text()
    links = re.findall(r'\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)', readme)
    assert links, 'the README links to docs/algorithm.md'
    for path, anchor in links:
        target = REPO / path
        assert target.is_file(), f'README links to {path}, which is not in the repository'
        if anchor:
            headings = re.findall(r'^#+ (.+)$', target.read_text(), re.M)
            assert anchor in {github_anchor(h) for h in headings}, f'{path}#{anchor}: no such heading'


def test_no_citation_outside_the_repository():
    for path in [REPO / 'README.md', *REPO.glob('swfp_ros/**/*.py'), *REPO.glob('docs/*.md')]:
        assert 'ALGORITHM.md' not in path.read_text(), f'{path.relative_to(REPO)} cites ALGORITHM.md (not in the repo)'
