"""The CPU image as a user runs it: built from this checkout, started with ``docker run``,
transcribing a shared clip sent by ``streamer captions`` from the host, and stopped with SIGTERM.

Traffic stays on 127.0.0.1: the container uses the host network, and the build does too (pip and
apt reach their registries as this machine does; scripts/docker-image). It runs wherever Docker can
start (``scripts/setup --test`` installs docker.io and debootstrap where it may): a build from nothing,
the Debian base image included, took about 2.5 minutes here (docs/deploy.md). It skips with the
reason where Docker cannot start, and when STREAMER_TEST_DOCKER=0 asks it to.

The CUDA image (``--build-arg VARIANT=cuda``) is built and checked only with STREAMER_TEST_DOCKER_CUDA=1:
about 6 GB more, and without a GPU only its CPU path and its refusal can be checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import recall
from support.docker import ensure_daemon
from support.replicas import free_port, healthz

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("STREAMER_TEST_IMAGE", "streamer:test")
CUDA_IMAGE = os.environ.get("STREAMER_TEST_CUDA_IMAGE", "streamer:cuda-test")
JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def docker_daemon():
    if os.environ.get("STREAMER_TEST_DOCKER") == "0":
        pytest.skip("STREAMER_TEST_DOCKER=0")
    daemon = ensure_daemon()
    if daemon.reason:
        pytest.skip(f"Docker cannot start here: {daemon.reason}")
    yield daemon
    daemon.stop()


def build(tag: str, *flags: str) -> str:
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "docker-image"), *flags, tag], cwd=ROOT, capture_output=True,
                            text=True, timeout=2000)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    print(f"built {tag} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return tag


@pytest.fixture(scope="module")
def image(docker_daemon) -> str:
    return build(IMAGE)


@pytest.fixture(scope="module")
def cuda_image(docker_daemon) -> str:
    if os.environ.get("STREAMER_TEST_DOCKER_CUDA") != "1":
        pytest.skip("the CUDA image is about 6 GB more to build; set STREAMER_TEST_DOCKER_CUDA=1 to build and run it")
    return build(CUDA_IMAGE, "--cuda")


@pytest.fixture
def jfk(shared_data) -> Path:
    clip = Path(shared_data) / "jfk" / "jfk.wav"
    if not clip.is_file():
        pytest.skip(f"{clip} not found in the shared test audio")
    return clip


def run_daemon(image: str, name: str, port: int, *env: str) -> None:
    """``docker run`` the image's daemon on the host network; wait for /healthz and Docker's ``healthy``."""
    flags = [x for pair in zip(["-e"] * len(env), env) for x in pair]
    docker("run", "-d", "--name", name, "--network", "host", "-e", f"STREAMER_SERVER__PORT={port}", *flags,
           "--health-interval", "2s", "--health-start-period", "300s", image)
    deadline = time.monotonic() + 240
    while (state := healthz(port))[0] != 200:
        running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        assert running == "true", docker("logs", name, check=False).stderr[-3000:]
        assert time.monotonic() < deadline, f"/healthz still {state} after 240 s"
        time.sleep(1)
    # Docker's own HEALTHCHECK agrees (it runs the image's script inside the container).
    deadline = time.monotonic() + 60
    while (health := docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()) != "healthy":
        assert health != "unhealthy" and time.monotonic() < deadline, health
        time.sleep(1)


def transcribe_through(port: int, clip: Path, tmp_path: Path) -> None:
    """``streamer captions`` from the host sends the clip; the transcript and the SRT come back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_") or k == "STREAMER_DATA"}
    env["STREAMER_CLIENT_CONFIG"] = "/nonexistent"
    srt = tmp_path / "jfk.srt"
    captions = subprocess.run([sys.executable, "-m", "streamer", "captions", "--url", f"ws://127.0.0.1:{port}",
                               "--fast", "--quiet", "-o", str(srt), str(clip)],
                              capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert captions.returncode == 0, captions.stderr
    assert recall(captions.stdout, JFK) >= 0.9, captions.stdout  # the images' model is base
    assert srt.read_text().count("-->") >= 1


def stop_drained(name: str) -> None:
    """``docker stop`` (SIGTERM) drains: exit code 0 well before the SIGKILL timeout, 'draining' logged."""
    stopped = time.monotonic()
    docker("stop", "-t", "60", name, timeout=90)  # SIGTERM, then SIGKILL only after 60 s
    took = time.monotonic() - stopped
    status = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
    logs = docker("logs", name, check=False)
    assert status["ExitCode"] == 0 and not status["OOMKilled"], logs.stderr[-3000:]
    assert took < 30, f"stop took {took:.1f} s"  # drained, not killed at the timeout
    assert "draining" in logs.stderr, logs.stderr[-3000:]


def test_image_serves_a_clip_and_drains_on_sigterm(image: str, jfk: Path, tmp_path: Path) -> None:
    config = docker("image", "inspect", image)
    (info,) = json.loads(config.stdout)
    assert info["Config"]["User"].split(":")[0] == "10001"  # not root
    assert "/healthz" in " ".join(info["Config"]["Healthcheck"]["Test"]) or \
        info["Config"]["Healthcheck"]["Test"][-1].endswith("healthcheck.py")
    name = f"streamer-test-{os.getpid()}"
    try:
        port = free_port()
        run_daemon(image, name, port)
        transcribe_through(port, jfk, tmp_path)
        stop_drained(name)
    finally:
        docker("rm", "-f", name, check=False)


def test_cuda_image_has_cuda_torch_refuses_without_a_gpu_and_serves_on_the_cpu(cuda_image: str, jfk: Path,
                                                                               tmp_path: Path) -> None:
    """What can be checked without a GPU: the torch inside is a CUDA build, the GPU profile stops with a clear
    error where there is no GPU, and the same image serves (on the CPU) when told to."""
    probe = docker("run", "--rm", "--entrypoint", "python", cuda_image, "-c",
                   "import torch; print(torch.__version__, torch.version.cuda)")
    version, cuda = probe.stdout.split()
    assert cuda != "None", probe.stdout
    assert docker("run", "--rm", cuda_image, "--version").stdout.strip()

    refused = docker("run", "--rm", "--network", "host", "-e", f"STREAMER_SERVER__PORT={free_port()}",
                     "-e", "STREAMER_ENGINE__MODEL=base", cuda_image, check=False, timeout=300)
    assert refused.returncode != 0
    assert "sees no CUDA GPU" in refused.stderr, refused.stderr[-3000:]

    name = f"streamer-test-cuda-{os.getpid()}"
    try:
        port = free_port()
        run_daemon(cuda_image, name, port, "STREAMER_ENGINE__MODEL=base", "STREAMER_ENGINE__DEVICE=cpu",
                   "STREAMER_ENGINE__DTYPE=auto")
        transcribe_through(port, jfk, tmp_path)
        stop_drained(name)
    finally:
        docker("rm", "-f", name, check=False)
