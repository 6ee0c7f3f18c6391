"""What a user installs: the sdist and the repaired wheel from .ci/wheel, in fresh venvs.

Costly (about a minute on a 2-core machine: .ci/wheel's two isolated builds ~25 s, a venv
with the runtime dependencies ~10 s, two more builds from the sdist without a compiler
~25 s), so it runs only when MUNGGOGGO_WHEEL_DIR names .ci/wheel's output folder: .ci/run
builds it with `bash .ci/wheel build/wheel` and then runs this file; a folder without a
wheel in it is built into here first.

    MUNGGOGGO_WHEEL_DIR=build/wheel .venv/bin/python -m pytest -q tests/test_wheel.py

The installed package is imported from a temporary folder with `python -I`, so the
repository is not on sys.path: only the venv's copy can answer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile  # auditwheel's dependency (the dev group)
from packaging.utils import parse_sdist_filename, parse_wheel_filename

from munggoggo import __version__

ROOT = Path(__file__).resolve().parent.parent
WHEEL_DIR = os.environ.get("MUNGGOGGO_WHEEL_DIR")
SMOKE = Path(__file__).with_name("wheel_smoke.py")
BANNER = "munggoggo: building WITHOUT the compiled speedups"

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not WHEEL_DIR,
        reason="builds and installs wheels (~1 min): set MUNGGOGGO_WHEEL_DIR (.ci/run does)",
    ),
]


@dataclass
class Dist:
    wheel: Path
    sdist: Path
    build_log: str


@dataclass
class Venv:
    root: Path
    workdir: Path  # a folder outside the repository to run from

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def install(self, wheel: Path) -> None:
        """Install this wheel in place of any munggoggo already there (deps stay)."""
        self.run(
            str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--force-reinstall", "--no-deps", str(wheel),
        )  # fmt: skip

    def smoke(self, *args: str) -> dict:
        """Run tests/wheel_smoke.py (a copy, outside the repository); its JSON line."""
        script = self.workdir / SMOKE.name
        shutil.copy(SMOKE, script)
        done = self.run(str(self.python), "-I", str(script), *args)
        return json.loads(done.stdout.splitlines()[-1])

    def run(self, *cmd: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.workdir,
            env={k: v for k, v in os.environ.items() if not k.startswith("MUNGGOGGO_")} | env,
        )
        if check:
            assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def dist() -> Dist:
    assert WHEEL_DIR
    out = Path(WHEEL_DIR).resolve()
    if not list(out.glob("*.whl")):
        subprocess.run(["bash", str(ROOT / ".ci" / "wheel"), str(out)], check=True, timeout=600)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist, (out / "build.log").read_text())


@pytest.fixture(scope="module")
def fresh_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv with the wheel and its runtime dependencies (from the index), nothing else."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=True)
    env = Venv(root, tmp_path_factory.mktemp("work"))
    env.run(str(env.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            str(dist.wheel))  # fmt: skip
    return env


def build_from_sdist(dist: Dist, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pip wheel from the sdist, verbose (pip shows a build's output only then)."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "-w", str(out), str(dist.sdist)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out,
        env={k: v for k, v in os.environ.items() if not k.startswith("MUNGGOGGO_")} | env,
    )  # fmt: skip


# -- the wheel -----------------------------------------------------------------------------


def test_the_wheel_is_tagged_for_a_package_index(dist: Dist) -> None:
    name, version, _, tags = parse_wheel_filename(dist.wheel.name)
    assert (name, str(version)) == ("munggoggo", __version__)
    interpreter = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for tag in tags:
        assert (tag.interpreter, tag.abi) == (interpreter, interpreter)
        assert re.fullmatch(r"(manylinux|musllinux)_\d+_\d+_\w+|manylinux\d+_\w+", tag.platform)


def test_the_compiled_modules_carry_no_debug_info_or_symbol_table(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        libs = [n for n in wheel.namelist() if n.endswith(".so")]
        assert sorted(Path(n).name.split(".")[0] for n in libs) == ["_confirms", "_frames"]
        for lib in libs:
            with wheel.open(lib) as raw:
                elf = ELFFile(raw)
                sections = [s.name for s in elf.iter_sections()]
            assert not [s for s in sections if s.startswith(".debug")], lib
            assert ".symtab" not in sections, lib  # stripped; .dynsym stays for the import


def test_the_wheel_and_the_sdist_carry_the_license_and_the_metadata(dist: Dist) -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in license_text
    prefix = f"munggoggo-{__version__}"
    with zipfile.ZipFile(dist.wheel) as wheel:
        assert wheel.read(f"{prefix}.dist-info/licenses/LICENSE").decode() == license_text
        metadata = wheel.read(f"{prefix}.dist-info/METADATA").decode()
    with tarfile.open(dist.sdist) as sdist:
        member = sdist.extractfile(f"{prefix}/LICENSE")
        assert member is not None and member.read().decode() == license_text
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert "Classifier: Typing :: Typed" in headers
    extras = {h.split(": ", 1)[1] for h in headers if h.startswith("Provides-Extra:")}
    assert {"gateway", "metrics", "otel", "all"} <= extras
    assert 'Requires-Dist: prometheus-client>=0.20; extra == "gateway"' in headers
    assert not [h for h in headers if "pytest" in h or 'extra == "dev"' in h]


def test_the_sdist_ships_no_tests_and_builds_without_warnings(dist: Dist) -> None:
    name, version = parse_sdist_filename(dist.sdist.name)
    assert (name, str(version)) == ("munggoggo", __version__)
    with tarfile.open(dist.sdist) as sdist:
        top = {Path(n).parts[1] for n in sdist.getnames() if len(Path(n).parts) > 1}
    assert "tests" not in top and "bench" not in top
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py"} <= top
    # The build log is .ci/wheel's: the sdist, the wheel built from it, the repair. The only
    # warnings allowed are the environment's (PYTHONDONTWRITEBYTECODE turns byte-compiling off).
    warnings = [
        line
        for line in dist.build_log.splitlines()
        if re.search(r"warn|!!", line, re.IGNORECASE) and "byte-compiling is disabled" not in line
    ]
    assert warnings == []


def test_the_installed_wheel_serves_rpc_and_topics_on_memory(fresh_venv: Venv, dist: Dist) -> None:
    fresh_venv.install(dist.wheel)
    seen = fresh_venv.smoke("--compiled")
    assert seen["product"] == 42 and seen["received"] == {"n": 1}
    assert seen["version"] == __version__
    assert seen["compiled"] is True and seen["notices"] == []
    assert Path(seen["speedups_file"]).is_relative_to(fresh_venv.root)  # not the repository


def test_the_console_script_reports_the_version(fresh_venv: Venv, dist: Dist) -> None:
    fresh_venv.install(dist.wheel)
    done = fresh_venv.run(str(fresh_venv.root / "bin" / "munggoggo"), "--version")
    assert __version__ in done.stdout.split()


def test_the_gateway_extra_brings_everything_the_gateway_imports(
    fresh_venv: Venv, dist: Dist
) -> None:
    fresh_venv.run(str(fresh_venv.python), "-m", "pip", "install", "-q",
                   "--disable-pip-version-check", f"{dist.wheel}[gateway]")  # fmt: skip
    code = (
        "import importlib, pkgutil, munggoggo.gateway as g\n"
        "for m in pkgutil.iter_modules(g.__path__, g.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    fresh_venv.run(str(fresh_venv.python), "-I", "-c", code)


def test_a_users_mypy_strict_sees_the_installed_wheels_types(fresh_venv: Venv, dist: Dist) -> None:
    # What a user's type checker sees: the wheel's py.typed marker and stubs, nothing of the
    # repository (no settings, no source tree on the path). The typed example passes
    # --strict; every marked misuse is rejected on its own line.
    fresh_venv.install(dist.wheel)
    fresh_venv.run(str(fresh_venv.python), "-m", "pip", "install", "-q",
                   "--disable-pip-version-check", "mypy")  # fmt: skip
    cases = ROOT / "tests" / "typing_cases"
    for source in (ROOT / "examples" / "typed_usage.py", cases / "misuse.py"):
        shutil.copy(source, fresh_venv.workdir / source.name)
    done = fresh_venv.run(
        str(fresh_venv.python), "-m", "mypy", "--strict", "--no-incremental",
        "typed_usage.py", "misuse.py", check=False,
    )  # fmt: skip
    errors: dict[str, set[int]] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^(?P<path>[^:]+):(?P<line>\d+): error:", line)
        if match:
            errors.setdefault(match["path"], set()).add(int(match["line"]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "typed_usage.py" not in errors, done.stdout
    wanted = {
        number
        for number, text in enumerate((cases / "misuse.py").read_text().splitlines(), start=1)
        if text.rstrip().endswith("# rejected")
    }
    assert len(wanted) >= 9
    assert errors.get("misuse.py") == wanted, done.stdout


# -- a build from the sdist without a compiler ---------------------------------------------


def test_a_build_without_a_compiler_says_so_and_runs_on_the_twins(
    dist: Dist, fresh_venv: Venv, tmp_path: Path
) -> None:
    built = build_from_sdist(dist, tmp_path, CC="/bin/false")
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert BANNER in output
    assert "MUNGGOGGO_REQUIRE_EXTENSIONS=1" in output
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert not [n for n in z.namelist() if n.endswith(".so")]
    fresh_venv.install(wheel)
    seen = fresh_venv.smoke()
    assert seen["product"] == 42 and seen["received"] == {"n": 1}
    assert seen["compiled"] is False
    # The first agent's start said so, once, naming both modules that are not there.
    ((level, text),) = seen["notices"]
    assert level == "WARNING" and "_frames" in text and "_confirms" in text


def test_require_extensions_makes_a_build_without_a_compiler_fail(
    dist: Dist, tmp_path: Path
) -> None:
    built = build_from_sdist(dist, tmp_path, CC="/bin/false", MUNGGOGGO_REQUIRE_EXTENSIONS="1")
    output = built.stdout + built.stderr
    assert built.returncode != 0
    assert BANNER in output and "MUNGGOGGO_REQUIRE_EXTENSIONS=1 is set" in output
    assert not list(tmp_path.glob("*.whl"))


def test_a_build_without_cython_says_so(dist: Dist, fresh_venv: Venv, tmp_path: Path) -> None:
    # The fresh venv has no Cython: a build there, without build isolation, has the sdist's
    # .pyx sources and nothing to translate them with.
    fresh_venv.run(str(fresh_venv.python), "-m", "pip", "install", "-q",
                   "--disable-pip-version-check", "setuptools>=77")  # fmt: skip
    assert fresh_venv.run(str(fresh_venv.python), "-c", "import Cython", check=False).returncode
    built = fresh_venv.run(
        str(fresh_venv.python), "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
        "--disable-pip-version-check", "-w", str(tmp_path), str(dist.sdist),
    )  # fmt: skip
    output = built.stdout + built.stderr
    assert BANNER in output and "Cython is not installed" in output
    assert list(tmp_path.glob("*.whl"))
