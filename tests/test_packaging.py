"""The installed package must carry every subpackage and the shipped data folders."""

import tomllib
from pathlib import Path

import autoprune
from autoprune.paths import shipped_dir

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    package_root = Path(autoprune.__file__).parent
    on_disk = {
        ".".join(("autoprune", *p.parent.relative_to(package_root).parts))
        for p in package_root.rglob("__init__.py")
    }
    missing = on_disk - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools].packages in pyproject.toml"


def test_shipped_folders_are_found():
    assert shipped_dir("hardware_profiles").is_dir()
    assert shipped_dir("search_spaces").is_dir()
