"""The wheel carries what the code needs at run time, and an installed wheel runs outside the checkout.

``python -m build`` makes the sdist and then the wheel from that sdist, so a file missing from
either shows up here. The installed check puts the wheel into a new virtual environment that
borrows the test environment's dependencies (torch, transformers, the embedded models) through a
``.pth`` line, so nothing is downloaded and the test stays near a minute; the wheel's own
``streamer`` comes first on ``sys.path``, which the test checks.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from streamer import __version__
from streamer.bench.metrics import wer
from streamer.resources import SAMPLE_NAME, sample_transcript

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("streamer-*.whl")
    return wheel


def test_build_makes_a_wheel_and_an_sdist(dist):
    assert len(list(dist.glob("streamer-*.tar.gz"))) == 1
    assert wheel_of(dist).name.endswith("-py3-none-any.whl")


def test_wheel_has_configs_web_page_sample_and_every_module(dist):
    names = set(zipfile.ZipFile(wheel_of(dist)).namelist())
    expected = {f"streamer/configs/{p.name}" for p in (REPO / "configs").glob("*.toml")}
    expected |= {f"streamer_clients/web/{p.name}" for p in (REPO / "clients" / "web").iterdir() if p.is_file()}
    expected |= {f"streamer/samples/{SAMPLE_NAME}.wav", f"streamer/samples/{SAMPLE_NAME}.txt"}
    # a new subpackage that pyproject.toml's explicit package list forgot would be missing here
    expected |= {p.relative_to(REPO).as_posix() for p in (REPO / "streamer").rglob("*.py")}
    expected |= {f"streamer_clients/{p.name}" for p in (REPO / "clients").glob("*.py")}
    assert {"streamer/configs/cpu.toml", "streamer_clients/web/index.html"} <= expected
    assert sorted(expected - names) == []
    metadata = zipfile.ZipFile(wheel_of(dist)).read(f"{wheel_of(dist).name.split('-py3')[0]}.dist-info/METADATA")
    assert b"Requires-Python: >=3.11" in metadata


def make_venv(path: Path) -> Path:
    """A venv whose site-packages ends with this test environment's (dependencies without downloads)."""
    venv.EnvBuilder(with_pip=True).create(path)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_installed_wheel_runs_outside_the_checkout(dist, tmp_path):
    python = make_venv(tmp_path / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                    "--disable-pip-version-check", str(wheel_of(dist))], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import streamer.resources as r; print(r.config_dir()); print(r.web_root()); "
                            "print(r.sample_path())"],
        cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split()
    for path in where:
        assert Path(path).is_relative_to(tmp_path / "venv"), where  # the wheel's copies, not the checkout's
    streamer = tmp_path / "venv" / "bin" / "streamer"
    version = subprocess.run([str(streamer), "--version"], cwd=elsewhere, capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"streamer {__version__}"
    proc = subprocess.run([str(streamer), "transcribe", "--sample", "--model", "tiny.en", "--format", "txt",
                           "--config", "cpu"], cwd=elsewhere, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert wer(sample_transcript(), proc.stdout) <= 0.15, proc.stdout
