"""The README's examples run as written, in order, on a fresh folder, so the README cannot drift.

Every fenced ``bash`` block of README.md is preceded by a marker comment::

    <!-- readme-test: fast -->                      run in the default suite (seconds)
    <!-- readme-test: slow; small: A => B; C => D -->  run by the slow test, with A replaced by B ...
    <!-- readme-test: skip: why -->                 never run (a server, a Ray cluster, ...)

- fast, default suite: every command of every block (skipped ones too) parses with the argparse
  parser of the module it calls, and every ``make`` target exists; every ``python`` block runs when
  pasted; the ``fast`` blocks run in a fresh folder.
- slow: every ``fast`` and ``slow`` block, in README order, in one fresh folder (``make T`` runs T's
  own recipe from the Makefile; its set-up dependencies are this interpreter), each command exiting
  0. The ``small:`` substitutions shrink sizes (e.g. the ``cpu`` training preset to ``smoke``).

The folder is fresh: no data, runs or studies; ``.venv/bin/python`` there runs this interpreter with
this checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
FENCE = re.compile(r"(?:<!-- readme-test: (?P<marker>.*?) -->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)


@dataclass
class Block:
    line: int
    lang: str
    body: str
    kind: str | None = None  # fast | slow | skip | None (no marker)
    subs: list[tuple[str, str]] = field(default_factory=list)

    def commands(self, small: bool = True) -> list[str]:
        """The shell commands (continuations joined, comment-only lines dropped), substituted."""
        text = self.body
        if small:
            for old, new in self.subs:
                text = text.replace(old, new)
        text = text.replace("\\\n", " ")
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def readme_blocks() -> list[Block]:
    text = README.read_text()
    out = []
    for m in FENCE.finditer(text):
        block = Block(text[: m.start("body")].count("\n") + 1, m.group("lang"), m.group("body"))
        marker = m.group("marker")
        if marker:
            head, _, rest = marker.partition(";")
            block.kind = head.split(":")[0].strip()
            rest = rest.strip()
            if rest.startswith("small:"):
                for pair in rest[len("small:"):].split(";"):
                    old, _, new = pair.partition("=>")
                    block.subs.append((old.strip(), new.strip()))
        out.append(block)
    return out


# --- make ------------------------------------------------------------------------------------------


def make_variables() -> dict[str, str]:
    out = {}
    for ln in MAKEFILE.read_text().splitlines():
        m = re.match(r"^([A-Z_]+)\s*[?:]?=\s*(.*)$", ln)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def make_recipe(target: str) -> list[str]:
    """The recipe lines of ``target`` (not of its dependencies), '@' prefixes removed."""
    lines = MAKEFILE.read_text().replace("\\\n", " ").splitlines()
    for i, ln in enumerate(lines):
        if re.match(rf"^{re.escape(target)}\s*:(?!=)", ln):
            recipe = []
            for r in lines[i + 1:]:
                if not r.startswith("\t"):
                    break
                recipe.append(r.strip().lstrip("@"))
            return recipe
    raise KeyError(target)


def expand_make(tokens: list[str]) -> list[str]:
    """``make TARGET [VAR=value ...]`` -> the target's recipe with the Makefile's variables expanded."""
    variables = make_variables()
    target = None
    for t in tokens[1:]:
        if "=" in t:
            k, v = t.split("=", 1)
            variables[k] = v
        else:
            target = t
    variables["CURDIR"] = "."

    def expand(s: str) -> str:
        for _ in range(10):
            s2 = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), ""), s)
            if s2 == s:
                return s
            s = s2
        return s

    return [expand(r) for r in make_recipe(target)]


# --- parsing ---------------------------------------------------------------------------------------


def _parser(module: str):
    if module == "retina_unet":
        from retina_unet.cli import build_parser

        return build_parser()
    if module == "retina_unet.study":
        import argparse

        from retina_unet.study import cli as study_cli

        p = argparse.ArgumentParser(prog="python -m retina_unet.study")
        study_cli._fill(p)
        return p
    if module == "toy_data":
        from toy_data.cli import _parser as toy_parser

        return toy_parser()
    raise AssertionError(f"README calls an unknown module {module!r}")


def check_parses(command: str) -> None:
    tokens = shlex.split(command, comments=True)
    if tokens == ["true"]:  # a substituted no-op (e.g. `make test` inside the tests)
        return
    if tokens[0] == "make":
        targets = [t for t in tokens[1:] if "=" not in t]
        for t in targets:
            make_recipe(t)  # KeyError: no such target
        return
    if tokens[0] == ".venv/bin/tensorboard":
        assert '"tensorboard' in MAKEFILE.read_text(), "the Makefile's venv does not install tensorboard"
        return
    assert tokens[:2] == [".venv/bin/python", "-m"], f"unexpected command in README: {command}"
    try:
        _parser(tokens[2]).parse_args(tokens[3:])
    except SystemExit as e:
        raise AssertionError(f"README command does not parse (exit {e.code}): {command}") from None


def test_every_bash_block_is_classified_and_its_substitutions_apply():
    blocks = [b for b in readme_blocks() if b.lang == "bash"]
    assert len(blocks) >= 8
    for b in blocks:
        assert b.kind in ("fast", "slow", "skip"), f"README line {b.line}: bash block without a readme-test marker"
        for old, _ in b.subs:
            assert old in b.body, f"README line {b.line}: substitution {old!r} matches nothing (drifted)"


def test_every_readme_command_parses():
    n = 0
    for b in readme_blocks():
        if b.lang == "bash":
            for c in b.commands(small=False) + b.commands(small=True):
                check_parses(c)
                n += 1
    assert n >= 20


def test_readme_python_blocks_run_when_pasted():
    blocks = [b for b in readme_blocks() if b.lang == "python"]
    assert blocks
    for b in blocks:
        namespace: dict = {}
        exec(compile(b.body, f"README.md:{b.line}", "exec"), namespace)  # noqa: S102
    assert tuple(namespace["feats"].shape) == (1, 8, 7, 7, 3)
    assert int(namespace["n"]) == 1  # IoU 0.5 > 0.4: the lower-scored box is suppressed


def _fresh_folder(tmp: Path) -> dict[str, str]:
    """A folder like a fresh clone for the commands: .venv/bin/python runs this interpreter here."""
    bin_dir = tmp / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RETINA_UNET_DATA", "PYTHONPATH")}
    env.update(PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return env


def run_blocks(tmp: Path, kinds: tuple[str, ...]) -> list[tuple[str, float]]:
    """Run the README blocks of ``kinds`` in order in ``tmp``; returns (command, seconds) per command."""
    env = _fresh_folder(tmp)
    timings = []
    for b in readme_blocks():
        if b.lang != "bash" or b.kind not in kinds:
            continue
        for command in b.commands():
            tokens = shlex.split(command, comments=True)
            lines = expand_make(tokens) if tokens[0] == "make" else [command]
            for line in lines:
                t0 = time.perf_counter()
                r = subprocess.run(["bash", "-c", line], cwd=tmp, env=env, capture_output=True, text=True,
                                   timeout=1800)
                timings.append((line, time.perf_counter() - t0))
                assert r.returncode == 0, (
                    f"README line {b.line}: `{line}` exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return timings


def test_fast_blocks_run_in_a_fresh_folder(tmp_path):
    timings = run_blocks(tmp_path, ("fast",))
    assert timings
    assert (tmp_path / "out" / "preview.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path):
    timings = run_blocks(tmp_path, ("fast", "slow"))
    print("\nREADME commands (fresh folder, small substitutions):")
    for line, seconds in timings:
        print(f"{seconds:8.1f} s  {line}")
    print(f"{sum(s for _, s in timings):8.1f} s  in all")
    # what the README promises is there; nothing was written outside the git-ignored folders
    for path in ("out/pred/detections.csv", "out/pred_8bit/detections.csv", "out/curves.png",
                 "out/overlays_s0/best_worst.png", "runs/retina_unet_s0/result.json"):
        assert (tmp_path / path).is_file(), path
    for p in tmp_path.iterdir():  # a clean checkout stays clean: every top-level output is git-ignored
        name = p.name + ("/" if p.is_dir() else "")
        r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", name])
        assert r.returncode == 0, f"the README's commands wrote {name}, which git does not ignore"
