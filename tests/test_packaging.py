import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_every_package_folder_is_installed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {name: REPO / folder for name, folder in config["package-dir"].items()}
    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            if not any(part.startswith(".") or part == "__pycache__" for part in rel):
                found.add(".".join((name, *rel)))
    assert found == listed


def test_one_namespace_and_no_bare_cli_or_export_modules(tmp_path):
    code = (
        "import importlib.util, splat_portrait.cli, splat_portrait.export;"
        "print(importlib.util.find_spec('cli'), importlib.util.find_spec('export'));"
        "print(splat_portrait.cli.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    first, second = out.splitlines()
    assert first == "None None"
    assert Path(second) == REPO / "cli" / "__init__.py"
