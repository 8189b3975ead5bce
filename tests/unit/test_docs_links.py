"""Links between README.md and docs/: every relative link names a file that exists and every #anchor a heading
of it (GitHub's anchor rules); and a reader starting from the README reaches two answers in one click."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        lines.append("" if fenced else line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, every character but letters, digits, `_`, `-`
    and spaces removed, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path):
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")  # GitHub numbers repeated headings
    return found


def links(path: Path) -> list[str]:
    return [target for line in prose(path) for target in LINK.findall(line)]


def section(path: Path, anchor: str) -> str:
    """The text under the heading of that anchor, up to the next heading of the same or a higher level."""
    if not anchor:
        return "\n".join(prose(path))
    lines, level, out = prose(path), 0, []
    for line in lines:
        heading = re.match(r"^(#{1,6})\s+(.*)", line)
        if heading and level and len(heading.group(1)) <= level:
            break
        if level:
            out.append(line)
        elif heading and slug(heading.group(2)) == anchor:
            level = len(heading.group(1))
    return "\n".join(out)


def test_the_slugs_follow_github():
    assert slug("Migrating from `ContextCallbackHandler`") == "migrating-from-contextcallbackhandler"
    assert slug("The sidecar: `otel-context serve`") == "the-sidecar-otel-context-serve"
    assert slug("Sessions: conversations, not loose calls") == "sessions-conversations-not-loose-calls"
    assert slug("Feedback, tool steps, redaction, filtering") == "feedback-tool-steps-redaction-filtering"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        destination = (page.parent / file).resolve() if file else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def test_every_docs_page_is_reached_from_the_readme():
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(REPO / "README.md")}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


# What a reader asks, and the words that answer it, all on one line of the page one link from the README.
QUESTIONS = {
    "which setting turns on a durable spool": ("OTEL_EXPORTER_CONTEXT_SPOOL_DIR", "durable spool"),
    "what is sent for a LangGraph agent": ("LangGraph", "create_agent", "one thread", "invoke_agent"),
}


@pytest.mark.parametrize("question", QUESTIONS)
def test_one_click_from_the_readme_answers(question: str):
    words = [word.lower() for word in QUESTIONS[question]]
    answered = []
    for target in links(REPO / "README.md"):
        file, _, anchor = target.partition("#")
        if not file.startswith("docs/"):
            continue
        text = section(REPO / file, anchor)
        if any(all(word in line.lower() for word in words) for line in text.splitlines()):
            answered.append(target)
    assert answered, f"no page linked from README.md answers {question!r}"


def test_the_command_and_each_subcommand_point_to_their_page():
    from otel_context.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    helps = {"otel-context": parser.format_help()} | {name: sub.format_help() for name, sub in commands.items()}
    for name, text in helps.items():
        pages = re.findall(r"(docs/[\w.-]+\.md)(?:#([\w-]+))?", text)
        assert pages, f"{name} --help names no page of docs/"
        for page, anchor in pages:
            assert (REPO / page).exists(), f"{name} --help: {page}"
            assert not anchor or anchor in anchors(REPO / page), f"{name} --help: {page}#{anchor}"
