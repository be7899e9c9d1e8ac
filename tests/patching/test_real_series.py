"""The repository's own series: found by default, applied to copies of the real installed Airflow
files of its line (the real installation is only read), and consistent with the lock files and the
README."""

from __future__ import annotations

import base64
import hashlib
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from airflow_ext import patching
from airflow_ext.errors import PatchError
from tests.patching.synthetic import info_dir

REPO_PATCHES = Path(__file__).resolve().parents[2] / "patches"


def test_default_patches_root_is_the_repository_series():
    if (Path(patching.__file__).parents[1] / "_patches").is_dir():
        pytest.skip("running from an installed wheel with bundled patches")
    names = [p.name for p in patching.series_for("2.11.2")]
    listed = [
        line.strip()
        for line in (REPO_PATCHES / "2.11.2" / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert names == listed and names and all((REPO_PATCHES / "2.11.2" / name).is_file() for name in names)


@pytest.mark.airflow2
def test_real_series_applies_to_copies_of_real_airflow_files(tmp_path):
    try:
        real = metadata.distribution("apache-airflow")
    except metadata.PackageNotFoundError:
        pytest.skip("apache-airflow is not installed in this interpreter")
    if real.version != "2.11.2":
        pytest.skip(f"installed apache-airflow is {real.version}, not 2.11.2")
    status = patching.series_status(dist=real, patches_root=REPO_PATCHES)  # reads only
    if status.state not in (patching.NOT_APPLIED, patching.APPLIED):
        pytest.fail(f"installed apache-airflow 2.11.2 is neither pristine nor patched ({status.state})")
    installed_state = status.state

    site = tmp_path / "site"
    originals = {}
    for f in status.files:
        copy = site / f.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.location, copy)
        originals[f.path] = copy.read_bytes()
    info = site / "apache_airflow-2.11.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(real.read_text("METADATA"))
    (info / "RECORD").write_text(real.read_text("RECORD"))
    fake = metadata.PathDistribution(info)
    kw = {"dist": fake, "patches_root": REPO_PATCHES}
    if installed_state == patching.APPLIED:  # the test environment is patched: start from released files
        patching.revert_series(**kw)
        originals = {rel: (site / rel).read_bytes() for rel in originals}
        for original in originals.values():
            assert _sha256_record(original) in real.read_text("RECORD")

    message = patching.apply_series(**kw)
    assert "2.11.2" in message and "0003-taskinstance-ding-alert.patch" in message
    patching.check_series(**kw)
    for rel, original in originals.items():
        patched = (site / rel).read_bytes()
        assert patched != original
        compile(patched, rel, "exec")  # still valid Python
    assert b"ding_on_failure" in (site / "airflow/models/baseoperator.py").read_bytes()
    assert b"send_ding_alert" in (site / "airflow/models/taskinstance.py").read_bytes()

    patching.revert_series(**kw)
    assert {rel: (site / rel).read_bytes() for rel in originals} == originals
    # the real installation was only read
    assert patching.series_status(dist=real, patches_root=REPO_PATCHES).state == installed_state


def _sha256_record(data: bytes) -> str:
    """The sha256 field of a RECORD line for ``data``."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


REAL_3X_VERSION = "3.3.2"


def _installed_airflow() -> metadata.Distribution | None:
    """What chooses the series: apache-airflow, else apache-airflow-core (Airflow 3 without the meta)."""
    for name in ("apache-airflow", "apache-airflow-core"):
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _normalized(dist: metadata.Distribution) -> str:
    return dist.metadata["Name"].lower().replace("_", "-").replace(".", "-")


def _copy_dist_info(site: Path, dist: metadata.Distribution) -> metadata.PathDistribution:
    """*dist*'s METADATA and RECORD under *site*: its RECORD then vouches for the copies there."""
    info = info_dir(site, _normalized(dist), dist.version)
    info.mkdir(parents=True)
    for name in ("METADATA", "RECORD"):
        (info / name).write_text(dist.read_text(name))
    return metadata.PathDistribution(info)


@pytest.mark.airflow3
def test_real_3x_series_applies_to_copies_of_real_airflow_files(tmp_path):
    version = REAL_3X_VERSION
    if not (REPO_PATCHES / version / "series").is_file():
        pytest.skip(f"patches/{version}/series does not exist (yet)")
    real = _installed_airflow()
    if real is None:
        pytest.skip("neither apache-airflow nor apache-airflow-core is installed in this interpreter")
    if real.version != version:
        pytest.skip(f"installed Airflow is {real.version}, not {version}")
    status = patching.series_status(patches_root=REPO_PATCHES)  # reads only, from this environment
    if status.state not in (patching.NOT_APPLIED, patching.APPLIED):
        pytest.fail(f"installed Airflow {version} is neither pristine nor patched ({status.state})")
    installed_state = status.state
    pins = patching.distributions_for(version, REPO_PATCHES)
    assert {f.dist_name for f in status.files} == {name for name, _ in pins}, "every listed dist is patched"

    # A tmp site-packages with every patched file and the dist-info of each distribution involved.
    site = tmp_path / "site"
    copies: dict[str, metadata.PathDistribution] = {}
    for dist in [real, *(metadata.distribution(name) for name, _ in pins)]:
        if _normalized(dist) not in copies:
            copies[_normalized(dist)] = _copy_dist_info(site, dist)
    for f in status.files:
        (site / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.location, site / f.path)
    kw = {"dist": copies[_normalized(real)], "dists": list(copies.values()), "patches_root": REPO_PATCHES}
    copied = patching.series_status(**kw)
    assert copied.state == installed_state and copied.distributions == status.distributions
    if installed_state == patching.APPLIED:  # the test environment is patched: start from released files
        patching.revert_series(**kw)
    originals = {f.path: (site / f.path).read_bytes() for f in copied.files}
    for f in copied.files:
        assert _sha256_record(originals[f.path]) in copies[f.dist_name].read_text("RECORD"), f.path

    message = patching.apply_series(**kw)
    assert version in message and all(p.name in message for p in status.patches)
    patching.check_series(**kw)
    for rel, original in originals.items():
        patched = (site / rel).read_bytes()
        assert patched != original, rel
        if rel.endswith(".py"):
            compile(patched, rel, "exec")  # still valid Python

    patching.revert_series(**kw)
    assert {rel: (site / rel).read_bytes() for rel in originals} == originals
    # the real installation was only read
    assert patching.series_status(patches_root=REPO_PATCHES).state == installed_state


def _series_names(directory: Path) -> list[str]:
    text = (directory / "series").read_text()
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_per_release_series_keep_the_names_and_order_of_the_series_they_share():
    """A per-release series lists its line's patches, its own in place of the one that does not
    apply; a patch added to the line's series must be added (or made) for the release too."""
    shared_from = {}
    for directory in sorted(p.parent for p in REPO_PATCHES.glob("*/series")):
        names = _series_names(directory)
        lines_series = {name.split("/")[1] for name in names if name.startswith("../")}
        if not lines_series:
            continue
        assert len(lines_series) == 1, f"{directory.name} shares patches of several series"
        (line,) = lines_series
        shared_from[directory.name] = line
        assert [name.rsplit("/", 1)[-1] for name in names] == _series_names(REPO_PATCHES / line)
    assert shared_from.get("2.11.0") == "2.11.2"


def test_every_supported_release_has_a_lock_installing_exactly_the_patched_distributions():
    for release in patching.available_versions(REPO_PATCHES):
        lock = REPO_PATCHES.parent / "requirements" / f"lock-airflow-{release}-py3.11.txt"
        pinned = {line.split(" ")[0] for line in lock.read_text().splitlines() if "==" in line}
        wanted = {f"{name}=={version}" for name, version in patching.distributions_for(release, REPO_PATCHES)}
        assert {f"apache-airflow=={release}", *wanted} <= pinned, lock.name


def test_readme_names_the_supported_releases_as_the_refusal_does():
    with pytest.raises(PatchError) as err:
        patching.series_for("3.2.0", REPO_PATCHES)
    readme = " ".join((REPO_PATCHES.parent / "README.md").read_text().split())
    assert " ".join(str(err.value).split()) in readme
    for release in patching.available_versions(REPO_PATCHES):
        assert release in str(err.value)
