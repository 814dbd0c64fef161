"""The README's and docs' promises, checked: every command in them names flags its command has, the cheap ones
run as written on a fresh clone, the Python they show names what the package has, and every docs link
resolves."""

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Commands the test runs as written (their --out goes to a temporary folder): cheap, and on shipped files only.
RUNNABLE = ("predict.py", "evaluate.py", "segkit verify")


def code_blocks(page: Path, language: str) -> list:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)


def commands(page: Path) -> list:
    """Every `python ...` or `segkit ...` command in the page's bash blocks, continuation lines joined, shell
    variables defined in the same block expanded, trailing comments dropped."""
    found = []
    for block in code_blocks(page, "bash"):
        variables = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            assignment = re.fullmatch(r"([A-Z_]+)=(.*)", line)
            if assignment:
                variables[assignment[1]] = assignment[2].strip("\"'")
                continue
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            line = re.sub(r"^(\w+='[^']*'\s+)+", "", line)  # environment settings before the command
            if line.startswith(("python ", "segkit ")):
                found.append(line)
    return found


def all_commands() -> list:
    return [c for page in PAGES for c in commands(page)]


def program(command: str) -> str:
    """What a command runs: 'train.py', '-m bench.latency' or 'segkit train'."""
    words = command.split()
    if words[0] == "segkit":
        return f"segkit {words[1]}"
    return f"-m {words[2]}" if words[1] == "-m" else words[1]


def argv(prog: str) -> list:
    if prog.startswith("segkit "):
        return [sys.executable, "-m", "segkit.cli.main", prog.split()[1]]
    return [sys.executable, *prog.split()]


def help_text(prog: str) -> str:
    result = subprocess.run([*argv(prog), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (prog, result.stderr[-1500:])
    return result.stdout


def test_every_command_names_real_flags():
    found = all_commands()
    assert len(found) >= 30
    helps = {}
    for command in found:
        prog = program(command)
        if prog not in helps:
            helps[prog] = help_text(prog)
        words = shlex.split(command)  # a quoted value (a --recipe text) is one word, its inner "--x" no flag
        for flag in (m.group(1) for w in words if (m := re.fullmatch(r"(--[a-z][a-z0-9-]*)(=.*)?", w))):
            assert re.search(rf"{re.escape(flag)}\b", helps[prog]), f"{flag} is not a flag of {prog}: {command}"


def runnable(command: str) -> bool:
    """A command on shipped files only: no placeholders (DIR, RUN, ~, $), and every path it reads exists."""
    words = shlex.split(command)
    if program(command) not in RUNNABLE or any(re.fullmatch(r"[A-Z_]+|.*[~$].*|.*\.\..*", w) for w in words):
        return False
    reads = [w for k, w in enumerate(words[2:], 2) if not w.startswith("-") and words[k - 1] != "--out"
             and ("/" in w or re.search(r"\.(keras|tflite|onnx|png|jpg|mp4)$", w))]
    return all((ROOT / w).exists() for w in reads)


def test_cheap_commands_run_as_written(tmp_path):
    cheap = [c for c in all_commands() if runnable(c)]
    assert {program(c) for c in cheap} == set(RUNNABLE), cheap
    for command in cheap:
        words = shlex.split(command)
        if "--out" in words:
            words[words.index("--out") + 1] = str(tmp_path / "out")
        prog = program(command)
        result = subprocess.run([*argv(prog), *words[len(prog.split()) + (words[0] == "python"):]], cwd=ROOT,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-1500:])


def test_python_examples_name_what_the_package_has():
    """In the README's and docs' Python blocks, every `segkit.X` exists and every keyword given to
    segkit.TrainConfig is one of its fields."""
    import dataclasses

    import segkit

    fields = {f.name for f in dataclasses.fields(segkit.TrainConfig)}
    blocks = [block for page in PAGES for block in code_blocks(page, "python")]
    assert any("segkit.train(" in b for b in blocks)
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "segkit":
                assert hasattr(segkit, node.attr), f"segkit.{node.attr} in {block[:80]!r}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "TrainConfig":
                assert {k.arg for k in node.keywords} <= fields, ast.unparse(node)


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
