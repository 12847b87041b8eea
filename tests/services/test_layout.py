"""The import rules the layout stands for (README, Layout): checked on the source, so a move cannot break them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Every module under `package` -> the dotted names it imports (absolute imports; relative ones resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: -node.level]
                    names.add(".".join([*base, node.module] if node.module else base))
                else:
                    names.add(node.module or "")
        found[module] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("model", ("pipelines", "services", "inctrl")), ("services", ("pipelines", "inctrl")), ("pipelines", ("inctrl",))],
)
def test_packages_import_only_what_sits_below_them(package: str, forbidden: tuple[str, ...]) -> None:
    offending = {
        module: sorted(name for name in names if name.split(".")[0] in forbidden)
        for module, names in imported_packages(package).items()
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_only_the_cli_reaches_into_the_dev_tools_and_only_when_they_are_there() -> None:
    users = {module for module, names in imported_packages("inctrl").items() if any(n.startswith("inctrl.dev") for n in names)}
    assert {module for module in users if not module.startswith("inctrl.dev")} == {"inctrl.cli"}
    # The CLI's import of them is the guarded one inside _add_dev_commands, not a top-level import.
    tree = ast.parse((ROOT / "inctrl" / "cli.py").read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any(isinstance(node, ast.ImportFrom) and (node.module or "").startswith("inctrl.dev") for node in top_level)


def test_services_has_one_folder_per_role_and_no_loose_modules_beyond_the_shared_ones() -> None:
    loose = sorted(path.name for path in (ROOT / "services").glob("*.py"))
    assert loose == ["__init__.py", "auth.py", "metrics.py", "ray_cluster.py", "settings.py"]
