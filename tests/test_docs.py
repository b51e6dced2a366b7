"""The docs hold: every relative link and image in README.md, README_cn.md and docs/*.md resolves (to a file or
folder of the repo; ``#anchor`` to a heading of the target page), every ``make X`` shown is a Makefile target,
and every ``python tools/T.py --flag`` (or ``python -m paddle_models cmd --flag``) uses a flag that the tool's
``--help`` lists. The checker is tested on bad snippets so that it can fail."""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from paddle_models.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh", "text"}
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK_TARGETS = (
    re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"),  # [text](target) and ![alt](target)
    re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M),  # [ref]: target
    re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.I),  # HTML
)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+[^>]*\b(?:id|name)=[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
MAKE_RULE = re.compile(r"^([A-Za-z0-9_./%-][A-Za-z0-9_./% -]*?)\s*::?(?!=)")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ">", ">>", "<", "2>", "2>&1", "(", ")"}
WRAPPERS = {"env", "time", "sudo", "exec"}


# ---- reading markdown ------------------------------------------------------------------------------
def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """(prose lines, code lines) of a markdown text: ``[(lineno, line)]`` outside fences and
    ``[(lineno, language, line)]`` inside them."""
    prose, code = [], []
    fence, language = None, ""
    for lineno, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, language = m.group(1), m.group(2).lower()
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]).strip():
            fence = None
        elif fence is not None:
            code.append((lineno, language, line))
        else:
            prose.append((lineno, line))
    return prose, code


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: inline markup dropped, lower case, punctuation removed (letters, marks,
    digits, ``_`` and ``-`` kept, so Chinese stays), spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = [ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LMN"]
    return "".join(kept).replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    """Every ``#anchor`` a page offers: its headings' slugs (repeats numbered ``-1``, ``-2`` as GitHub does) and
    explicit ``<a id=...>`` / ``<a name=...>``."""
    prose, _ = split_markdown(text)
    anchors, seen = set(), {}
    for _, line in prose:
        anchors.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


# ---- links -------------------------------------------------------------------------------------------
def relative_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image of the prose that is not a URL (code is skipped)."""
    prose, _ = split_markdown(text)
    found = []
    for lineno, line in prose:
        line = INLINE_CODE.sub("", line)
        for pattern in LINK_TARGETS:
            for target in pattern.findall(line):
                if not SCHEME.match(target) and not target.startswith("//"):
                    found.append((lineno, target))
    return found


def link_errors(page: Path, root: Path) -> list[str]:
    """``page:line: ...`` for each relative link of ``page`` that leaves ``root``, names nothing, or names an
    anchor its target page lacks."""
    errors = []
    root = root.resolve()
    for lineno, target in relative_links(page.read_text(encoding="utf-8")):
        path_part, _, anchor = target.partition("#")
        where = f"{page.relative_to(root)}:{lineno}: link {target!r}"
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if resolved != root and root not in resolved.parents:
            errors.append(f"{where} leaves the repository")
        elif not resolved.exists():
            errors.append(f"{where}: {path_part} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors_of(resolved.read_text(encoding="utf-8")):
            errors.append(f"{where}: no heading with anchor #{anchor} in {resolved.relative_to(root)}")
    return errors


# ---- commands ------------------------------------------------------------------------------------------
def shown_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command line) of the shell code blocks (continuation lines joined, ``$ `` prompts dropped)
    and of the inline code spans that start with ``make`` / ``python``."""
    prose, code = split_markdown(text)
    commands, pending, start = [], "", 0
    for lineno, language, line in code:
        if language not in SHELL_LANGUAGES:
            continue
        stripped = line.strip()
        if stripped.startswith("$ "):
            stripped = stripped[2:]
        if not pending:
            start = lineno
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        commands.append((start, pending + stripped))
        pending = ""
    for lineno, line in prose:
        for _, span in INLINE_CODE.findall(line):
            if re.match(r"(make|\S*python3?|paddle-models)\s", span.strip()):
                commands.append((lineno, span.strip()))
    return commands


def _tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in a placeholder: split on spaces
        return command.split("#", 1)[0].split()


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``&&``, ``;``, ``|``, redirections), each without its
    leading ``VAR=value`` assignments and wrappers (``env``, ``nice -n N``, ``timeout N``)."""
    parts, current = [], []
    for token in _tokens(command):
        if token in SHELL_OPERATORS or set(token) <= set("&|;<>()"):
            parts.append(current)
            current = []
        else:
            current.append(token.strip("[]"))
    parts.append(current)
    return [tokens for tokens in map(_drop_wrappers, parts) if tokens]


def _drop_wrappers(tokens: list[str]) -> list[str]:
    while tokens:
        if re.match(r"^[A-Za-z_]\w*=", tokens[0]) or tokens[0] in WRAPPERS:
            tokens = tokens[1:]
        elif tokens[0] == "nice":
            tokens = tokens[3:] if tokens[1:2] == ["-n"] else tokens[1:]
        elif tokens[0] == "timeout":
            tokens = tokens[2:]
        else:
            break
    return tokens


def makefile_targets(makefile: Path) -> set[str]:
    """Names defined as rules in ``makefile`` (pattern and variable-made targets excluded)."""
    targets = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        m = MAKE_RULE.match(line)
        if m and not line.startswith("\t"):
            targets.update(t for t in m.group(1).split() if "%" not in t and "$" not in t)
    return targets


def tool_of(tokens: list[str]) -> tuple[str | None, list[str]]:
    """(``tools/T.py`` path, the arguments after it) of a command that runs a tool, else (None, [])."""
    if tokens[0] == "paddle-models" and len(tokens) > 1:
        module = COMMANDS.get(tokens[1].replace("_", "-"), (tokens[1].replace("-", "_"),))[0]
        return f"tools/{module}.py", tokens[2:]
    if not re.search(r"(^|/)python3?(\.\d+)?$", tokens[0]) or len(tokens) < 2:
        return None, []
    if tokens[1:3] == ["-m", "paddle_models"] and len(tokens) > 3:
        module = COMMANDS.get(tokens[3].replace("_", "-"), (tokens[3].replace("-", "_"),))[0]
        return f"tools/{module}.py", tokens[4:]
    if re.fullmatch(r"(\./)?tools/[\w-]+\.py", tokens[1]):
        return tokens[1].removeprefix("./"), tokens[2:]
    return None, []


def command_errors(page: Path, root: Path, targets: set[str], help_of: Callable[[str], str]) -> list[str]:
    """``page:line: ...`` for each shown ``make X`` that is no target of ``targets`` and each tool flag that
    ``help_of(tool path)`` does not list (or a tool that does not exist)."""
    errors = []
    for lineno, command in shown_commands(page.read_text(encoding="utf-8")):
        where = f"{page.relative_to(root)}:{lineno}: {command!r}"
        for tokens in simple_commands(command):
            if tokens[0] == "make":
                errors += [f"{where}: make target {t!r} is not in the Makefile" for t in tokens[1:]
                           if t and not t.startswith("-") and "=" not in t and t not in targets]
                continue
            tool, args = tool_of(tokens)
            if tool is None:
                continue
            if not (root / tool).is_file():
                errors.append(f"{where}: {tool} does not exist")
                continue
            listed = set(OPTION.findall(help_of(tool)))
            flags = {a.split("=", 1)[0] for a in args if OPTION.fullmatch(a.split("=", 1)[0])}
            errors += [f"{where}: {tool} has no flag {flag} (see its --help)" for flag in sorted(flags - listed)]
    return errors


@functools.cache
def tool_help(tool: str) -> str:
    """``python TOOL --help`` of this repo, run once per tool (one thread, Paddle's log quiet)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(ROOT / tool), "--help"], capture_output=True, text=True, cwd=str(ROOT),
                       env=env, timeout=120)
    assert p.returncode == 0, f"{tool} --help exited {p.returncode}: {p.stderr[-1000:]}"
    return p.stdout


# ---- the repository's pages ------------------------------------------------------------------------------
PAGES = sorted([p for p in (ROOT / "README.md", ROOT / "README_cn.md") if p.exists()]
               + list((ROOT / "docs").glob("*.md")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert link_errors(page, ROOT) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shown_commands_are_make_targets_and_tool_flags(page):
    assert command_errors(page, ROOT, makefile_targets(ROOT / "Makefile"), tool_help) == []


def test_the_docs_test_runs_in_make_test():
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8").split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest -q tests" in recipe


def cjk_count(text: str) -> int:
    """Chinese characters in ``text`` (CJK unified ideographs, extension A and compatibility ideographs)."""
    return sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"
               or "\uf900" <= ch <= "\ufaff")


def _code_commands(page: Path) -> set[str]:
    _, code = split_markdown(page.read_text(encoding="utf-8"))
    return {" ".join(tokens[:2]) for _, _, line in code for tokens in simple_commands(line)}


def test_the_readmes_are_entry_pages_linked_to_each_other():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    readme_cn = (ROOT / "README_cn.md").read_text(encoding="utf-8")
    assert len(readme) <= 250, f"README.md has {len(readme)} lines (at most 250)"
    first_screen = "\n".join(readme[:60])
    assert "make demo" in first_screen and "make test" in first_screen
    assert "(README_cn.md)" in "\n".join(readme[:5]) and "(README.md)" in "\n".join(readme_cn.splitlines()[:5])
    assert {"make demo", "make test"} <= _code_commands(ROOT / "README_cn.md")
    assert cjk_count(readme_cn) >= 1500, f"README_cn.md has {cjk_count(readme_cn)} Chinese characters"
    assert len(list((ROOT / "docs").glob("*.md"))) >= 4


def test_every_picture_in_docs_images_is_shown_somewhere():
    shown = {(page.parent / target.partition("#")[0]).resolve() for page in PAGES
             for _, target in relative_links(page.read_text(encoding="utf-8"))}
    pictures = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert pictures
    assert [p.name for p in pictures if p.resolve() not in shown] == []


# ---- the checker on bad snippets ------------------------------------------------------------------------
BAD_PAGE = """# Guide
## Two commands: `make demo`
See [setup](#two-commands-make-demo), [nowhere](#no-such-heading), [other](other.md#usage),
[gone](missing.md), ![pic](images/missing.png), [outside](../../etc/passwd), [web](https://example.com/x.md)
and `[not a link](inline-code.md)`.

```bash
make demo && make no-such-target VAR=1
nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python tools/train.py -c cfg.yaml \\
    --bogus-flag 3 -o Global.epochs=2 --json   # a comment --not-a-flag
python -m paddle_models train --epochs=3
python tools/absent.py --help
```

```python
make = "not a command"  # python, not shell: not checked
```
"""


@pytest.fixture()
def bad_repo(tmp_path):
    (tmp_path / "docs" / "images").mkdir(parents=True)
    (tmp_path / "docs" / "other.md").write_text("# Other\n## Usage\n", encoding="utf-8")
    (tmp_path / "docs" / "guide.md").write_text(BAD_PAGE, encoding="utf-8")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "train.py").write_text("", encoding="utf-8")
    (tmp_path / "Makefile").write_text(".PHONY: demo\ndemo: $(STAMP)\n\t$(PY) tools/demo.py\nX := 1\n",
                                       encoding="utf-8")
    return tmp_path


def test_link_checker_reports_each_bad_link(bad_repo):
    errors = link_errors(bad_repo / "docs" / "guide.md", bad_repo)
    assert len(errors) == 4, errors
    assert "#no-such-heading" in errors[0] and "missing.md does not exist" in errors[1]
    assert "images/missing.png does not exist" in errors[2] and "leaves the repository" in errors[3]
    assert all(e.startswith("docs/guide.md:3:") or e.startswith("docs/guide.md:4:") for e in errors)


def test_command_checker_reports_bad_targets_flags_and_tools(bad_repo):
    helps = {"tools/train.py": "usage: train.py [-h] -c CONFIG [-o KEY=VALUE] [--json] [--epochs N]"}
    targets = makefile_targets(bad_repo / "Makefile")
    assert targets == {".PHONY", "demo"}
    errors = command_errors(bad_repo / "docs" / "guide.md", bad_repo, targets, helps.__getitem__)
    assert len(errors) == 3, errors
    assert "make target 'no-such-target'" in errors[0]
    assert "tools/train.py has no flag --bogus-flag" in errors[1] and ":9:" in errors[1]
    assert "tools/absent.py does not exist" in errors[2]


def test_chinese_characters_are_counted_without_punctuation_or_latin():
    assert cjk_count("中文说明：make demo，两条命令。") == 8


def test_slugs_follow_github():
    assert github_slug("Export & inference (ONNX, bf16)") == "export--inference-onnx-bf16"
    assert github_slug("`make demo` and [the docs](docs/x.md)") == "make-demo-and-the-docs"
    assert github_slug("快速开始：两条命令") == "快速开始两条命令"
    assert anchors_of("# A\n## A\n```\n# not a heading\n```\n<a id=\"x\"></a>\n") == {"a", "a-1", "x"}
