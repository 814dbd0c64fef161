"""The README's promises, checked: every command in it names flags its script has, the cheap ones run as
written on a fresh clone, and `.keras` files reload in a fresh interpreter the way its Models section says."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

import models

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Commands the test runs as written (their --out goes to a temporary folder): cheap, and on shipped files only.
RUNNABLE_SCRIPTS = ("predict.py", "evaluate.py", "-m data.verify")


def readme_commands() -> list:
    """Every `python ...` command in the README's bash blocks, continuation lines joined, shell variables
    defined in the same block expanded, trailing comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
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
            if line.startswith("python "):
                commands.append(line)
    return commands


def script_of(command: str) -> str:
    words = command.split()
    return f"-m {words[2]}" if words[1] == "-m" else words[1]


def help_text(script: str) -> str:
    result = subprocess.run([sys.executable, *script.split(), "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (script, result.stderr[-1500:])
    return result.stdout


def test_readme_commands_name_real_flags():
    commands = readme_commands()
    assert len(commands) >= 20
    helps = {}
    for command in commands:
        script = script_of(command)
        if script not in helps:
            helps[script] = help_text(script)
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", command):
            assert re.search(rf"{re.escape(flag)}\b", helps[script]), f"{flag} is not a flag of {script}: {command}"


def runnable(command: str) -> bool:
    """A command on shipped files only: no placeholders (DIR, RUN, ~, $), and every path it reads exists."""
    words = shlex.split(command)
    if script_of(command) not in RUNNABLE_SCRIPTS or any(re.fullmatch(r"[A-Z_]+|.*[~$].*|.*\.\..*", w) for w in words):
        return False
    reads = [w for k, w in enumerate(words[2:], 2) if not w.startswith("-") and words[k - 1] != "--out"
             and ("/" in w or re.search(r"\.(keras|tflite|onnx|png|jpg|mp4)$", w))]
    return all((ROOT / w).exists() for w in reads)


def test_cheap_readme_commands_run_as_written(tmp_path):
    commands = [c for c in readme_commands() if runnable(c)]
    assert {script_of(c) for c in commands} == set(RUNNABLE_SCRIPTS), commands
    for command in commands:
        words = shlex.split(command)
        if "--out" in words:
            words[words.index("--out") + 1] = str(tmp_path / "out")
        result = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-1500:])


RELOAD = """
import sys
import numpy as np
import keras
folder, importing = sys.argv[1], sys.argv[2]
if importing == "models":
    sys.path.insert(0, sys.argv[3])
    import models  # noqa: F401
x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
for name in sys.argv[4:]:
    try:
        np.save(f"{folder}/{name}.out.npy", np.asarray(keras.saving.load_model(f"{folder}/{name}.keras")(x)))
        print(name, "loaded")
    except Exception as error:
        print(name, "failed:", str(error).replace(chr(10), " "))
"""
PLAIN = {"mobilenetv2_pix2pix": {"alpha": 0.35}}  # Keras' own layers only
NEED_IMPORT = {"ddrnet": {}, "mobilenetv3_lraspp": {"variant": "small"}}  # our ResizeLike / BilinearUpsample


def test_keras_files_reload_as_the_readme_says(tmp_path):
    """In a fresh interpreter that imports nothing of ours, a model of Keras' own layers reloads with plain
    load_model; the others name the missing class, and reload after `import models` alone."""
    x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    expected = {}
    for name, options in {**PLAIN, **NEED_IMPORT}.items():
        model = models.build_model(name, 3, **options)
        model.save(tmp_path / f"{name}.keras")
        expected[name] = np.asarray(model(x))

    def reload(importing, names):
        result = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path), importing, str(ROOT), *names],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-1500:]
        return dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())

    bare = reload("nothing", [*PLAIN, *NEED_IMPORT])
    assert all(bare[name] == "loaded" for name in PLAIN), bare
    assert all(re.search(r"failed:.*(ResizeLike|BilinearUpsample)", bare[name]) for name in NEED_IMPORT), bare
    assert all(status == "loaded" for status in reload("models", list(NEED_IMPORT)).values())
    for name in expected:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.out.npy"), expected[name], atol=1e-5)
