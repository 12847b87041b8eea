"""Static checks of deploy/Dockerfile (no Docker engine here): non-root, extras that exist,
a build context that holds everything copied and no secrets."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "deploy" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def arg_default(name: str) -> str:
    for keyword, rest in instructions():
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1].strip('"')
    raise AssertionError(f"ARG {name} has no default")


def build_context_includes(path: str) -> bool:
    """Docker's last-match-wins rule over Dockerfile.dockerignore."""
    included = True
    for pattern in DOCKERIGNORE.read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) for prefix in prefixes):
            included = negated
    return included


def test_runtime_stage_runs_as_numeric_non_root_user() -> None:
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    if uid.startswith("${"):
        uid = arg_default(uid.strip("${}"))
    assert uid.isdigit() and int(uid) != 0


@pytest.mark.parametrize("extras_arg", ["default", "cpu-variant"])
def test_extras_exist_in_pyproject_and_never_mix_faiss_builds(extras_arg: str) -> None:
    optional = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if extras_arg == "default":
        extras = arg_default("EXTRAS").split(",")
        assert "gpu" in extras
    else:
        documented = re.search(r"--build-arg EXTRAS=(\S+)", DOCKERFILE.read_text())
        assert documented, "the CPU variant build command is not documented"
        extras = documented.group(1).split(",")
        assert "cpu" in extras
    assert set(extras) <= set(optional), f"unknown extras {set(extras) - set(optional)}"
    assert not {"cpu", "gpu"} <= set(extras)
    assert {"serve", "pipelines"} <= set(extras)


def test_everything_copied_from_the_context_exists_and_is_not_ignored() -> None:
    sources = []
    for keyword, rest in instructions():
        if keyword == "COPY" and "--from=" not in rest:
            sources += shlex.split(rest)[:-1]
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: missing from the repository"
        assert build_context_includes(source), f"COPY {source}: excluded by Dockerfile.dockerignore"
    for secret_like in (".stack/credentials.env", "deploy/local.env", ".venv/bin/python", "tests/helm"):
        assert not build_context_includes(secret_like), f"{secret_like} would enter the build context"


def test_no_secret_is_baked_into_the_image() -> None:
    for keyword, rest in instructions():
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"(SECRET|PASSWORD|ACCESS_KEY|TOKEN)\w*=", rest, re.IGNORECASE), rest
    for keyword, rest in instructions():
        if keyword == "FROM":
            image = rest.split()[0]
            if image.startswith("${"):
                image = arg_default(image.strip("${}"))
            assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"


def test_dev_only_code_stays_out_of_the_image_and_the_cli_works_without_it(tmp_path: Path) -> None:
    """inctrl/dev/ (local stack, demo, benches) is not shipped; the deployed commands must not need it."""
    assert build_context_includes("inctrl/cli.py") and build_context_includes("services/serving/app.py")
    for dev_only in ("inctrl/dev/local_stack.py", "inctrl/dev/demo.py", "inctrl/dev/reliability/bench.py"):
        assert not build_context_includes(dev_only), f"{dev_only} would ship in the image"
    # The image's tree: every shipped package, without inctrl/dev.
    for package in ("model", "pipelines", "services", "inctrl"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "dev"))
    shown = subprocess.run(
        # The editable install's finder maps inctrl.* to this checkout by name: drop it, import the copy.
        [sys.executable, "-c", "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
         "from inctrl.cli import app; from typer.main import get_command; print(sorted(get_command(app).commands))"],  # fmt: skip
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, check=True,
    )
    commands = shown.stdout
    assert "'serve'" in commands and "'consume'" in commands and "'domain'" in commands
    assert "'demo'" not in commands
