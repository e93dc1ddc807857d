"""The README and docs/ name what the code has: every `unlearn …` they write parses (its
subcommands exist, each `--flag` is one of that command's), every option of every command is in
the README's command list, the defaults that list shows are the parser's, every `make` target of
its table exists — `make clean-store` deleting what it says —, and every module is in its "Where
things live" table. test_docs.py checks links and headings; this checks what a reader types and
looks for."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PARSER = build_parser()
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def resolve(words: list[str], parser=PARSER) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest subcommand `words` name from `parser`, and the words that named it."""
    path = []
    for word in words:
        if word not in subcommands(parser):
            break
        parser = subcommands(parser)[word]
        path.append(word)
    return parser, path


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def leaves(parser=PARSER, path: tuple[str, ...] = ()):
    """(path, parser) of every command that runs (no further subcommands)."""
    if not subcommands(parser):
        yield " ".join(path), parser
    for name, sub in subcommands(parser).items():
        yield from leaves(sub, (*path, name))


def written_commands(page: Path):
    """(line, text) of every `unlearn …` written on a page: inline code and lines of code blocks,
    without a `$ ` prompt, leading VAR=value assignments, a trailing `# comment` or a `| pipe`."""
    fenced = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            fenced = not fenced
            continue
        for text in [line] if fenced else re.findall(r"`([^`\n]+)`", line):
            text = re.sub(r"^\s*\$\s+", "", text).split(" #")[0].split(" | ")[0]
            if not re.search(r"(^|\s)unlearn\s", text + " "):
                continue
            words = shlex.split(text.replace("[", " ").replace("]", " "))
            while words and ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words[:1] == ["unlearn"]:
                yield number, words[1:]


def test_every_unlearn_command_written_in_the_docs_exists_with_its_options():
    wrong = []
    for page in PAGES:
        for number, words in written_commands(page):
            parser, path = resolve(words)
            rest = words[len(path):]
            if subcommands(parser) and rest and not rest[0].startswith("-"):
                wrong.append(f"{page.name}:{number}: unlearn {' '.join(path)} has no subcommand {rest[0]!r}")
            for word in rest:
                if word.startswith("--") and word.split("=")[0] not in flags(parser) | {"--help"}:
                    wrong.append(f"{page.name}:{number}: unlearn {' '.join(path)} has no option {word}")
    assert wrong == []


def command_list() -> dict[str, list[str]]:
    """The README's command list: each command (its path of subcommands) and the lines describing
    it — its bullet, its sub-bullets, and `A` · `B ID …` siblings on one bullet."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("`unlearn` commands"))
    listed, current = {}, []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        head = re.match(r"^- `unlearn ([^`]*)`", line)
        if head:
            _, path = resolve(head.group(1).split())
            current = [" ".join(path)]
            for sibling in re.findall(r" · `(\w+)", line):  # `unlearn requests show ID` · `extend ID …`
                current.append(" ".join(resolve([*path[:-1], sibling])[1]))
            for key in current:
                listed.setdefault(key, []).append(line)
        elif line.startswith("  ") and current:
            for key in current:
                listed[key].append(line)
            # "(`comply` and `audit` have it too)": the bullet's options belong to those commands as well
            for other in re.findall(r"`(\w+)`(?= and `\w+` have it too| have it too)", line):
                listed.setdefault(other, []).append(line)
    return listed


def test_every_option_of_every_command_is_in_the_readme_command_list():
    listed = command_list()
    assert "`--json` on every command that reports a result" in README.read_text(encoding="utf-8")
    missing = []
    for path, parser in leaves():
        named = set(re.findall(r"--[a-z][a-z-]*", " ".join(listed.get(path, []))))
        if path not in listed:
            missing.append(f"unlearn {path} (no bullet)")
        missing += [f"unlearn {path} {flag}" for flag in sorted(flags(parser) - named - {"--help", "--json"})
                    if flag.startswith("--")]
    assert missing == []


def test_the_defaults_the_readme_command_list_shows_are_the_parsers():
    """`--train-steps 400`, `--lam 1e-3`, …: a number after an option in a sub-bullet is its
    default (options whose default is resolved later, such as `--port`, have none in the parser)."""
    differ = []
    for path, lines in command_list().items():
        parser, _ = resolve(path.split())
        actions = {o: a for a in parser._actions for o in a.option_strings}
        for line in lines[1:]:
            for flag, value in re.findall(r"`(--[a-z-]+) ([0-9][0-9.e+-]*)`", line):
                default = getattr(actions.get(flag), "default", None)
                if default is not None and float(value) != float(default):
                    differ.append(f"unlearn {path} {flag}: README {value}, parser {default}")
    assert differ == []


def make_targets_in_the_readme() -> dict[str, str]:
    rows = re.findall(r"^\| `make ([\w-]+)` \| (.*) \|$", README.read_text(encoding="utf-8"), re.M)
    return dict(rows)


def test_every_make_target_in_the_readme_is_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    assert make_targets_in_the_readme() and set(make_targets_in_the_readme()) <= targets


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_store_deletes_the_stores_the_readme_names_and_the_ledger_with_the_key(tmp_path):
    """The signing key goes, so the default ledger MACed with it must go too: kept, it no longer
    verifies and `train`, `data add` and `requests submit` stop on it."""
    from tasks.ledger_db import LEDGER_FILE
    from unlearning.compliance.signing import KEY_FILE

    stores = ["mlflow/mlflow.db", "mlflow/artifacts/run/model.pt", ".prefect/prefect.db", str(KEY_FILE), LEDGER_FILE]
    kept = ["data/adult/table.csv", "data.dvc", ".dvc-storage/files/md5/ab/cdef"]
    for name in stores + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    described = make_targets_in_the_readme()["clean-store"]
    assert all(f"`{p}`" in described for p in ("mlflow/mlflow.db", "mlflow/artifacts/", ".prefect/", ".unlearn/",
                                                LEDGER_FILE))
    subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "clean-store"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert [n for n in stores if (tmp_path / n).exists()] == []
    assert all((tmp_path / n).exists() for n in kept)


# Described by concern in the README ("leak detectors: cards, … masking, fingerprints, allowlists"),
# not file by file.
BY_CONCERN = ("unlearning/detect/", "unlearning/metrics/")


def test_every_module_is_named_in_where_things_live():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Where things live"):text.index("## Documentation")]
    modules = [p.relative_to(ROOT).as_posix() for folder in ("unlearning", "tasks", "flows")
               for p in sorted((ROOT / folder).rglob("*.py")) if p.name != "__init__.py"]
    assert len(modules) > 100
    def named(module: str) -> bool:  # as `escrow.py`, `kinds/base.py` or the whole path
        parts = module.split("/")
        return any(f"`{'/'.join(parts[i:])}`" in table for i in range(len(parts)))

    unnamed = [m for m in modules if not m.startswith(BY_CONCERN) and not named(m)]
    assert unnamed == []


def test_the_purge_section_says_the_signed_evidence_is_kept_and_names_each_folder_of_it():
    """`.unlearn/run_certificates/` was never purged and no page said so: what a purge or `model
    retire` leaves of each folder of signed evidence is written where the purge is described."""
    from tasks.certificates import AUDIT_DIR, CERTIFICATES
    from tasks.state import RUN_CERTIFICATES

    text = (ROOT / "docs" / "compliance.md").read_text()
    section = text.split("## Purging superseded artifacts", 1)[1].split("\n## ", 1)[0]
    kept = section.split("**Kept for good, on purpose:**", 1)[1].split("\n- ", 1)[0]
    for folder in (CERTIFICATES, str(AUDIT_DIR), f".unlearn/{RUN_CERTIFICATES}"):
        assert f"`{folder}/`" in kept, folder
    assert "never a removed value" in kept
