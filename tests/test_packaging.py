"""environment.yml (conda users) and pyproject.toml (pip users) must name the same packages."""

from __future__ import annotations

import re

import tomllib
import yaml

# conda-forge names that differ from the PyPI name of the same package
CONDA_TO_PYPI = {
    "pytorch-cpu": "torch",
    "pytorch": "torch",
    "snakemake-minimal": "snakemake",
    "matplotlib-base": "matplotlib",
}
NOT_PACKAGES = {"python", "pip"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]}
    pip_names |= {_name(r) for r in project["optional-dependencies"]["dev"]}

    env = yaml.safe_load((root / "environment.yml").read_text())
    conda_names: set[str] = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda_names |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            n = _name(dep.replace("=", "==", 1) if "==" not in dep else dep)
            conda_names.add(CONDA_TO_PYPI.get(n, n))
    conda_names -= NOT_PACKAGES
    assert conda_names == pip_names, (
        f"only in environment.yml: {sorted(conda_names - pip_names)}; only in pyproject.toml: {sorted(pip_names - conda_names)}"
    )


def test_install_pins_torch_and_transformer_lens_3_9(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    tl = [r for r in project["dependencies"] if _name(r) == "transformer-lens"]
    assert tl == ["transformer-lens>=3.9,<3.10"], "TransformerLens 4 removed HookedTransformer: keep 3.9.x"
    readme = (root / "README.md").read_text()
    assert 'python3 -m pip install torch==2.13.0 -e ".[dev]" && snakemake --cores 2' in readme


def test_ci_runs_exactly_the_readme_test_command(root):
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    assert "\npython3 -m pytest\n" in readme
    assert "\npython3 -m pytest\n" in ci
    assert 'torch==2.13.0 -e ".[dev]"' in ci
    assert '"$rc" -eq 5' in ci, ".ci/run must turn pytest's exit code 5 (no tests) into a failure"


def test_ci_lints_and_the_config_schema_ships_in_the_package(root):
    from patchbench.config import SCHEMA

    ci = (root / ".ci" / "run").read_text()
    assert "\npython3 -m ruff check .\n" in ci and "\npython3 -m ruff format --check .\n" in ci
    assert ci.index("ruff check") < ci.index("python3 -m pytest"), "lint before the long test run"
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.yaml" in package_data["patchbench"]
    assert SCHEMA.is_file() and SCHEMA.is_relative_to(root / "src" / "patchbench")
