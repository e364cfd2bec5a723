"""Every `artifactkit` command and option the README shows exists (code blocks, the
command table and inline code), and the README's examples name only files that the
documented steps create (the demo's `runs/demo/...`) or the repository holds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from artifactkit.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
# Files and folders the demo (the README's first command) writes, per run.
DEMO_RUN_FILES = {"ckpt.pt", "model.akit", "tokenizer.model", "log.jsonl", "run.json", "roundtrip.json",
                  "data/val_*.bin", "data/train_*.bin"}
DEMO_FILES = {"size.md", "size.png", "ab.md", "ab.png"}


def readme_snippets() -> list[str]:
    """The shell text of every fenced code block (continuation lines joined) and every
    inline code span (table cells' `\\|` read as `|`)."""
    text = README.read_text(encoding="utf-8")
    snippets = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        snippets += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    snippets += [span.replace("\\|", "|") for span in re.findall(r"`([^`\n]+)`", without_blocks)]
    return snippets


def invocations() -> list[tuple[str, list[str]]]:
    """(snippet, words after `artifactkit`) for every `artifactkit ...` in the README."""
    found = []
    for snippet in readme_snippets():
        for part in re.split(r"&&|;|\|\s|#|>", snippet):  # pipes inside [a|b] choices have no space after
            words = part.split()
            for index, word in enumerate(words):
                if word == "artifactkit":
                    found.append((snippet, words[index + 1:]))
    return found


def resolve(words: list[str]) -> tuple[click.Command | None, list[str]]:
    """The (sub)command the words name, and the words after it."""
    command: click.Command = main
    rest = list(words)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return (None if command is main else command), rest


def option_names(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)} | {"--help", "-h"}


def test_readme_shows_commands_and_options_that_exist():
    checked, problems = 0, []
    for snippet, words in invocations():
        command, rest = resolve(words)
        if command is None:
            if words and not words[0].startswith("-"):
                problems.append(f"{snippet!r}: 'artifactkit {words[0]}' is no command")
            continue
        names = option_names(command)
        for word in rest:
            option = re.match(r"\[?(--?[a-z][a-z0-9-]*)", word)
            if option and option.group(1) not in names:
                problems.append(f"{snippet!r}: {command.name} has no option {option.group(1)}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 20  # the table, the code blocks and the inline examples


def test_every_command_appears_in_the_readme():
    named = {resolve(words)[0] for _, words in invocations()}
    for name, command in main.commands.items():
        subcommands = list(command.commands.values()) if isinstance(command, click.Group) else [command]
        for sub in subcommands:
            assert sub in named, f"the README never shows 'artifactkit {name}'"


def test_readme_code_blocks_name_only_files_the_documented_steps_create():
    """Bug: the examples used runs/tiny/ckpt.pt and train_gpt.py, which no step creates, and
    runs/demo/model.akit, which is really runs/demo/{vanilla,jepa}/model.akit."""
    root = README.parent
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    written: set[str] = set()  # files an earlier command of the README writes (-o, --plot, >)
    problems = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if "artifactkit" not in line or line.strip().startswith("python3 -m venv"):
                continue
            words = shlex.split(line.split("#")[0], posix=True)
            for index, word in enumerate(words):
                if words[index - 1] in ("-o", "--output", "--plot", "--markdown", ">") and index:
                    written.add(word)
                    continue
                if not re.search(r"\.(pt|akit|model|bin|py|json|jsonl)$", word) or word.startswith("-"):
                    continue
                if word in written or (root / word).exists():
                    continue
                demo = re.fullmatch(r"runs/demo/(vanilla|jepa)/(.+)", word)
                if demo and demo.group(2) in DEMO_RUN_FILES or word.removeprefix("runs/demo/") in DEMO_FILES:
                    continue
                problems.append(f"{word} (in: {line.strip()})")
            if ">" in line:
                written.add(line.rsplit(">", 1)[1].strip())
    assert not problems, "README examples name files no documented step creates:\n" + "\n".join(problems)


def test_readme_and_reports_have_no_unfilled_template_placeholders():
    """Numbers go into the README by hand from reports/; a placeholder like @RTN_NOW@ left
    behind once shipped unnoticed for a whole session."""
    documents = [README, *sorted((README.parent / "reports").glob("*.md"))]
    left = {path.name: re.findall(r"@[A-Z][A-Z0-9_]*@", path.read_text(encoding="utf-8")) for path in documents}
    assert not {name: found for name, found in left.items() if found}
