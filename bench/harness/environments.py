"""The measured environments: stock and patched Airflow of one line, built with uv under ``.bench/``.

Both get the pinned Airflow from the line's lock file and this project (non-editable); only
``patched`` then gets ``airflow-ext patch apply``. They live in ``.bench/envs/<version>/<hash>/``,
where the hash covers how they are built and everything installed from this checkout, so they are
rebuilt when any of it changes and reused otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import BenchError
from .lines import REPO, Line
from .redaction import progress, tail

ENVS_DIR = REPO / ".bench" / "envs"
#: Bump when the way the environments are built changes, to force a rebuild.
ENV_RECIPE = "2"
PYTHON_SERIES = "3.11"
UNPATCHED, PATCHED = "unpatched", "patched"
ENV_NAMES = (UNPATCHED, PATCHED)


def run(
    cmd: list[str], what: str, *, env: dict | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run a command to completion; its failure is the benchmark's (with the output's tail)."""
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no result within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise BenchError(f"{what} failed (exit {result.returncode}):\n{tail(result.stdout + result.stderr)}")
    return result


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def python_version(venv: Path) -> str:
    code = "import platform; print(platform.python_version())"
    return run([str(venv_python(venv)), "-c", code], "python --version").stdout.strip()


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise BenchError(f"no site-packages in the {venv.name} environment")
    return found[0]


def _uv_command() -> list[str]:
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found:
        return [found]
    raise BenchError(
        "uv is needed to build the benchmark environments: `pip install uv` (it is in the lock file)"
    )


def _source_files(line: Line) -> list[Path]:
    files = [line.lock, REPO / "pyproject.toml"]
    for top in (REPO / "airflow_ext", REPO / "patches"):
        files.extend(
            p
            for p in sorted(top.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return files


def _source_hash(line: Line, python: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe={ENV_RECIPE};python={python}\0".encode())
    for path in _source_files(line):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _installed_matches_source(venv: Path) -> bool:
    """The wheel uv installed carries exactly this checkout's airflow_ext (no stale cached build)."""
    installed = site_packages(venv) / "airflow_ext"
    for src in sorted((REPO / "airflow_ext").rglob("*.py")):
        if "__pycache__" in src.parts:
            continue
        dst = installed / src.relative_to(REPO / "airflow_ext")
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            return False
    return True


def _build_env(line: Line, venv: Path, *, patched: bool, uv: list[str], python: str) -> None:
    name = venv.name
    if venv.exists():
        shutil.rmtree(venv)
    progress(f"building the {name} environment with uv")
    run([*uv, "venv", "--quiet", "--python", python, str(venv)], f"uv venv ({name})")
    py = str(venv_python(venv))
    install = [*uv, "pip", "install", "--quiet", "--python", py, "--compile-bytecode"]
    run([*install, "-r", str(line.lock)], f"uv pip install -r {line.lock.name} ({name})")
    # A local directory is cached by uv on pyproject.toml alone: force a fresh build.
    fresh = ["--reinstall-package", "airflow-dingbot", "--refresh-package", "airflow-dingbot"]
    run([*install, *fresh, str(REPO)], f"uv pip install <repo> ({name})")
    if not _installed_matches_source(venv):
        raise BenchError(f"the airflow_ext installed in the {name} environment differs from this checkout")
    ext = str(venv / "bin" / "airflow-ext")
    env = airflow_env(venv, home=None)
    if patched:
        run([ext, "patch", "apply"], "airflow-ext patch apply", env=env)
        run([ext, "patch", "check"], "airflow-ext patch check (after apply)", env=env)
    else:
        check = subprocess.run([ext, "patch", "check"], env=env, capture_output=True, text=True)
        if check.returncode == 0:
            raise BenchError("the unpatched environment reports the patch series as applied")
    # Patching drops the bytecode of the files it changed; compile everything again, in both
    # environments alike, so no measured import compiles source.
    airflow_dir = str(site_packages(venv) / "airflow")
    run([py, "-m", "compileall", "-q", "-j", "0", airflow_dir], f"compileall ({name})")
    (venv / ".bench-ready").write_text(f"{name}\n", encoding="utf-8")


def ensure_envs(line: Line) -> dict[str, Path]:
    """The line's two environments, built if this checkout has none yet, checked on every run."""
    python = sys.executable if sys.version_info[:2] == (3, 11) else PYTHON_SERIES
    key = _source_hash(line, platform.python_version() if python == sys.executable else PYTHON_SERIES)
    line_dir = ENVS_DIR / line.version
    envs = {name: line_dir / key / name for name in ENV_NAMES}
    missing = [name for name, venv in envs.items() if not (venv / ".bench-ready").is_file()]
    if missing:
        uv = _uv_command()
        for name in missing:
            _build_env(line, envs[name], patched=(name == PATCHED), uv=uv, python=python)
        for stale in line_dir.iterdir():  # this line's environments of older sources
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
    else:
        progress(f"reusing the environments in .bench/envs/{line.version}/{key}")
    # Cheap re-checks on every run: the patched env is patched, the other is not.
    patched_ext = str(envs[PATCHED] / "bin" / "airflow-ext")
    run([patched_ext, "patch", "check"], "airflow-ext patch check", env=airflow_env(envs[PATCHED], None))
    unpatched = subprocess.run(
        [str(envs[UNPATCHED] / "bin" / "airflow-ext"), "patch", "check"],
        env=airflow_env(envs[UNPATCHED], home=None),
        capture_output=True,
        text=True,
    )
    if unpatched.returncode == 0:
        raise BenchError("the unpatched environment reports the patch series as applied; delete .bench/")
    return envs


#: Homes whose metadata database is not their own SQLite file -> its URL (see use_postgres).
_DATABASE_FOR_HOME: dict[Path, str] = {}


def use_postgres(server_url: str, line: Line, homes: dict[str, Path]) -> None:
    """One fresh PostgreSQL database per measured environment's home (``dingbot_bench_*``), on the
    server ``server_url`` names; every process of that home then uses it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name, home in homes.items():
                database = f"dingbot_bench_{line.version.replace('.', '_')}_{name}"
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
                conn.execute(text(f'CREATE DATABASE "{database}"'))
                _DATABASE_FOR_HOME[home] = server.set(database=database).render_as_string(hide_password=False)
    except Exception as err:
        raise BenchError(f"--postgres {server.render_as_string()}: {type(err).__name__}: {err}") from None
    finally:
        admin.dispose()


def uses_postgres() -> bool:
    return bool(_DATABASE_FOR_HOME)


def airflow_env(venv: Path, home: Path | None, **extra: str) -> dict[str, str]:
    """A clean environment for a process of ``venv``: none of the driver's AIRFLOW*/PYTHON* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "CONDA_", "__PYVENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    for key in ("NO_PROXY", "no_proxy"):  # the robot is local: never through a proxy
        env[key] = ",".join(x for x in (env.get(key, ""), "127.0.0.1", "localhost") if x)
    if home is not None:
        env["AIRFLOW_HOME"] = str(home)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
        if home in _DATABASE_FOR_HOME:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _DATABASE_FOR_HOME[home]
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    env.update(extra)
    return env


def migrate(envs: dict[str, Path], homes: dict[str, Path]) -> None:
    """``airflow db migrate`` in a new home per environment, both at once."""
    database = "PostgreSQL" if uses_postgres() else "SQLite"
    progress(f"airflow db migrate ({database}), once per environment")
    procs = {}
    for name, venv in envs.items():
        homes[name].mkdir(parents=True)
        (homes[name] / "dags").mkdir()
        procs[name] = subprocess.Popen(
            [str(venv / "bin" / "airflow"), "db", "migrate"],
            env=airflow_env(venv, homes[name]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise BenchError(f"airflow db migrate ({name}) failed:\n{tail(out)}")
