"""The cluster scripts (k8s/*.sh) and the add-on values they install, checked without a cluster: static checks of the
flags a real cluster rejected, shellcheck, and the scripts run against stand-ins for kubectl, helm, skaffold, curl
and `tickpipe` that answer like the real tools (tests/deploy/fake_tool.py), so that their decisions are tested:
which part a failure names, what is deployed, what is built."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.files import STAGES, versions

pytestmark = pytest.mark.unit
K8S = REPO / "k8s"
TOOLS = REPO / ".deps" / "tools" / "bin"
FAKE_TOOL = Path(__file__).parent / "fake_tool.py"


# -- what `make k8s-up` installs ---------------------------------------------------------------------------------------


def traefik_values(target: str) -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "traefik" / f"{target}.yaml").read_text()))


def test_kind_node_image_is_pinned_by_the_digest_of_the_kind_release_for_the_kubernetes_minor() -> None:
    pinned = versions()
    minor = ".".join(pinned["KUBERNETES_VERSION"].split(".")[:2])
    assert re.fullmatch(rf"kindest/node:v{re.escape(minor)}\.\d+@sha256:[0-9a-f]{{64}}", pinned["KIND_NODE_IMAGE"])
    text = (K8S / "versions.env").read_text()
    assert f"kind {pinned['KIND_VERSION']}" in text, "versions.env says which kind release lists the digest"
    script = (K8S / "up.sh").read_text()
    assert '--image "$KIND_NODE_IMAGE"' in script and "kindest/node:v$KUBERNETES_VERSION" not in script


def test_traefik_on_kind_gets_string_labels_a_cluster_ip_service_and_an_upgrade_that_frees_the_host_ports() -> None:
    values = traefik_values("kind")
    assert values["nodeSelector"] == {"ingress-ready": "true"}  # a string: the API server rejects a boolean
    kind_config = yaml.safe_load((K8S / "kind-config.yaml").read_text())
    assert values["nodeSelector"].items() <= kind_config["nodes"][0]["labels"].items()
    assert values["service"] == {"spec": {"type": "ClusterIP"}}  # chart >= 40: service.type is ignored
    assert values["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert {values["ports"]["web"]["hostPort"], values["ports"]["websecure"]["hostPort"]} == {80, 443}


def test_traefik_on_minikube_is_a_load_balancer_that_helm_does_not_wait_an_address_for() -> None:
    assert traefik_values("minikube")["service"] == {"spec": {"type": "LoadBalancer"}}
    script = (K8S / "up.sh").read_text()
    minikube = script[script.index("  minikube)") : script.index(";;", script.index("  minikube)"))]
    assert "traefik=(--values k8s/traefik/minikube.yaml)" in minikube  # no --wait: only `minikube tunnel` gives one
    assert "rollout status deployment/traefik" in script


def test_up_script_sets_no_traefik_value_on_the_command_line() -> None:
    """Flags live in k8s/traefik/*.yaml, where these tests see their types and names."""
    script = (K8S / "up.sh").read_text()
    assert not re.search(r"--set[ =](ports|service|nodeSelector|updateStrategy)\.", script)
    for target in ("kind", "minikube"):
        assert f"--values k8s/traefik/{target}.yaml" in script


def test_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = TOOLS / "shellcheck"
    if not shellcheck.is_file():
        pytest.fail(f"{shellcheck} is missing: run `make setup` (setup/tools.sh installs the pinned shellcheck)")
    scripts = sorted(str(p.relative_to(REPO)) for p in [*K8S.glob("*.sh"), *(REPO / "charts").glob("*/files/*.sh")])
    assert len(scripts) >= 6
    result = subprocess.run([str(shellcheck), "-x", *scripts], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


# -- the scripts against stand-ins ---------------------------------------------------------------------------------


def b64(text: str) -> str:
    return b64encode(text.encode()).decode()


# The answers of a healthy release (first matching rule wins: [substring of the command line, stdout, exit code]).
HEALTHY: list[list[Any]] = [
    ["kubectl --context kind-tickpipe get namespace tickpipe", "", 0],
    ["get kafka/tickpipe", "True", 0],
    ["get kafkatopics", "True\nTrue\n", 0],
    ["rollout status", "rolled out", 0],
    ["get flinkdeployment/tickpipe-ma-job -o jsonpath={.status.jobStatus.state}", "RUNNING", 0],
    ["exec statefulset/tickpipe-timescaledb", "42", 0],
    ["GF_SECURITY_ADMIN_USER", b64("admin"), 0],
    ["GF_SECURITY_ADMIN_PASSWORD", b64("generated"), 0],
    ["skaffold run --profile kind", "", 0],
    ["/api/health", '{\n  "database": "ok",\n  "version": "13.2.1"\n}', 0],
    ["/api/ds/query", '{"results":{"A":{"status":200,"frames":[{"data":{"values":[["BTCUSDT"],[42]]}}]}}}', 0],
    ["tickpipe k8s status", "healthy", 0],
]


def run_script(
    script: str, tmp_path: Path, rules: list[list[Any]], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run k8s/<script> with the stand-in tools; the calls they received are in tmp_path/calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("kubectl", "helm", "skaffold", "curl", "tickpipe", "docker"):
        path = bin_dir / tool
        path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(FAKE_TOOL.parent)!r})\n"
                        f"import fake_tool\nsys.exit(fake_tool.main({tool!r}))\n")  # fmt: skip
        path.chmod(0o755)
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_RULES": str(tmp_path / "rules.json"),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "TICKPIPE": str(bin_dir / "tickpipe"),
        "HELM": str(bin_dir / "helm"),
        **env,
    }
    return subprocess.run(["bash", str(K8S / script), *args], env=environment, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


SMOKE_FAST = {"SMOKE_TIMEOUT": "1", "SMOKE_POLL_SECONDS": "0"}


def test_smoke_deploys_with_skaffold_and_passes_when_every_part_answers(tmp_path: Path) -> None:
    result = run_script("smoke.sh", tmp_path, HEALTHY, **SMOKE_FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "k8s-smoke: ok: tickpipe in tickpipe on kind-tickpipe (42 rows with MA(5) and MA(20)" in result.stdout
    made = calls(tmp_path)
    assert "skaffold run --profile kind --kube-context kind-tickpipe" in made
    # The dashboard query went through the Ingress as Grafana's admin, with the password from the chart's Secret.
    query = next(call for call in made if "/api/ds/query" in call)
    assert "--user admin:generated" in query and "http://grafana.localtest.me/api/ds/query" in query
    assert "tickpipe k8s status --namespace tickpipe --context kind-tickpipe" in made


@pytest.mark.parametrize(
    ("broken", "part"),
    [
        (["get flinkdeployment/tickpipe-ma-job -o jsonpath={.status.jobStatus.state}", "RECONCILING", 0], "ma-job"),
        (["get kafka/tickpipe", "False", 0], "kafka"),
        (["rollout status deployment/tickpipe-ingestor-sim", "Waiting for rollout", 1], "sim"),
        (["exec statefulset/tickpipe-timescaledb", "3", 0], "timescaledb-rows"),
        (["tickpipe k8s status", "NOT healthy: 1 problem(s)", 1], "tickpipe k8s status"),
        (["/api/health", "curl: (6) Could not resolve host: grafana.localtest.me", 6], "grafana-ingress"),
        (["/api/ds/query", '{"results":{"A":{"frames":[{"data":{"values":[]}}]}}}', 0], "grafana-query"),
        (["skaffold run", "build failed", 1], "deploy"),
    ],
)
def test_smoke_fails_naming_the_part_that_does_not_answer(tmp_path: Path, broken: list[Any], part: str) -> None:
    result = run_script("smoke.sh", tmp_path, [broken, *HEALTHY], **SMOKE_FAST)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"k8s-smoke: FAILED: {part}: "), result.stderr


def test_smoke_without_a_cluster_says_to_make_one(tmp_path: Path) -> None:
    result = run_script(
        "smoke.sh", tmp_path, [["kubectl", "The connection to the server was refused", 1]], **SMOKE_FAST
    )
    assert result.returncode == 1
    assert "k8s-smoke: FAILED: cluster: no cluster at kube context kind-tickpipe (run `make k8s-up K8S=kind`" in (
        result.stderr
    )


def test_smoke_with_a_registry_installs_the_pushed_images_with_the_simulator(tmp_path: Path) -> None:
    rules = [["helm", "", 0], *HEALTHY]
    result = run_script("smoke.sh", tmp_path, rules, REGISTRY="ghcr.io/you", TAG="0.2.0", **SMOKE_FAST)
    assert result.returncode == 0, result.stderr
    install = next(call for call in calls(tmp_path) if call.startswith("helm upgrade --install tickpipe"))
    for stage in STAGES:
        assert f"--set {stage}.image.registry=ghcr.io/you --set-string {stage}.image.tag=0.2.0" in install
    assert "--set ingestor.sim.enabled=true" in install
    assert 'ingestor.env.BINANCE_WS_URL=ws://{{ include "ingestor.fullname" . }}-sim:9443' in install
    assert not any(call.startswith("skaffold") for call in calls(tmp_path))


UPGRADE_HEALTHY: list[list[Any]] = [
    ["helm status tickpipe", "STATUS: deployed", 0],
    ["helm upgrade tickpipe", "Release upgraded", 0],
    ["jsonpath={.status.jobStatus.state}", "RUNNING", 0],
    ["jsonpath={.metadata.generation}", "4", 0],
    ["jsonpath={.status.observedGeneration}", "4", 0],
    ["jsonpath={.status.lifecycleState}", "STABLE", 0],
    ["jsonpath={.status.error}", "", 0],
    ["tickpipe k8s status", "healthy", 0],
]


def test_upgrade_runs_helm_upgrade_then_waits_for_the_job_on_the_new_spec(tmp_path: Path) -> None:
    result = run_script("upgrade.sh", tmp_path, UPGRADE_HEALTHY, "dist/tickpipe-0.2.0.tgz", "-f", "images.yaml",
                        UPGRADE_TIMEOUT="1", UPGRADE_POLL_SECONDS="0")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    upgrade = next(call for call in calls(tmp_path) if call.startswith("helm upgrade"))
    assert upgrade.startswith("helm upgrade tickpipe dist/tickpipe-0.2.0.tgz --namespace tickpipe --wait")
    assert upgrade.endswith("-f images.yaml")
    assert "upgrade: ok: tickpipe in tickpipe" in result.stdout


def test_upgrade_refuses_a_job_that_cannot_take_a_savepoint(tmp_path: Path) -> None:
    rules = [["jsonpath={.status.jobStatus.state}", "FAILED", 0], *UPGRADE_HEALTHY]
    result = run_script("upgrade.sh", tmp_path, rules, "charts/tickpipe")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("upgrade: FAILED: preflight: the MA job is FAILED, not RUNNING")
    assert not any(call.startswith("helm upgrade") for call in calls(tmp_path))


def test_upgrade_stops_at_a_job_that_does_not_restore_and_names_the_way_out(tmp_path: Path) -> None:
    after = [["jsonpath={.status.jobStatus.state}", "FAILED", 0],
             ["jsonpath={.status.error}", "Cannot map checkpoint state for operator", 0]]  # fmt: skip
    state = tmp_path / "upgraded"
    rules = [["helm upgrade tickpipe", "Release upgraded", 0, str(state)]]
    rules += [[*rule, None, str(state)] for rule in after]  # the answers once the upgrade ran
    rules += UPGRADE_HEALTHY
    result = run_script("upgrade.sh", tmp_path, rules, "charts/tickpipe", UPGRADE_TIMEOUT="5", UPGRADE_POLL_SECONDS="0")
    assert result.returncode == 1
    assert "upgrade: FAILED: ma-job: the job did not come back (Cannot map checkpoint state for operator)" in (
        result.stderr
    )


# -- make images ------------------------------------------------------------------------------------------------------


def test_images_builds_each_target_for_the_registry_and_packages_the_chart(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    result = run_script("images.sh", tmp_path, [], REGISTRY="ghcr.io/you", TAG="0.2.0", DRY_RUN="1", DIST=str(dist))
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines() if line.startswith("docker buildx build")]
    assert len(builds) == len(STAGES)
    for stage in STAGES:
        [build] = [b for b in builds if f"--target {stage} " in b]
        assert f"--tag ghcr.io/you/tickpipe-{stage}:0.2.0" in build
        assert ("--platform linux/amd64" in build) == (stage == "ma-job")
        assert f"--build-arg PYTHON_PATCH_VERSION={versions()['PYTHON_PATCH_VERSION']}" in build
    chart_version = yaml.safe_load((REPO / "charts" / "tickpipe" / "Chart.yaml").read_text())["version"]
    assert (dist / f"tickpipe-{chart_version}.tgz").is_file()
    values = yaml.safe_load((dist / "images-0.2.0.yaml").read_text())
    assert values == {stage: {"image": {"registry": "ghcr.io/you", "repository": f"tickpipe-{stage}", "tag": "0.2.0"}}
                      for stage in STAGES}  # fmt: skip


def test_images_without_a_registry_fails_in_one_line(tmp_path: Path) -> None:
    result = run_script("images.sh", tmp_path, [], DRY_RUN="1", DIST=str(tmp_path / "dist"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "images: set REGISTRY, the registry (and path) to tag the images for, e.g. REGISTRY=ghcr.io/you"
    )


RESTORE: list[list[Any]] = [
    ["get statefulset/tickpipe-timescaledb", "timescale/timescaledb:2.27.1-pg17", 0],
    ["get pvc/tickpipe-timescaledb-backups", "", 0],
    ["get statefulset/tickpipe-ingestor", "1", 0],
    ["run tickpipe-timescaledb-restore", "restore: /backups/tickpipe-20261201T031700Z.dump -> tickpipe_restored", 0],
]


def test_restore_stops_the_writers_restores_in_a_pod_and_starts_them_again(tmp_path: Path) -> None:
    result = run_script("restore.sh", tmp_path, RESTORE, "tickpipe-20261201T031700Z.dump")
    assert result.returncode == 0, result.stdout + result.stderr
    made = [call.split(" --overrides ")[0] for call in calls(tmp_path)]
    job = 'kubectl --namespace tickpipe patch flinkdeployment/tickpipe-ma-job --type merge -p {"spec":{"job":'
    order = [
        "kubectl --namespace tickpipe scale statefulset/tickpipe-ingestor --replicas 0",
        job + '{"state":"suspended"}}}',
        "kubectl --namespace tickpipe run tickpipe-timescaledb-restore --image timescale/timescaledb:2.27.1-pg17",
        job + '{"state":"running"}}}',
        "kubectl --namespace tickpipe scale statefulset/tickpipe-ingestor --replicas 1",
    ]
    positions = [next(i for i, call in enumerate(made) if call.startswith(step)) for step in order]
    assert positions == sorted(positions)
    run = next(call for call in calls(tmp_path) if " run tickpipe-timescaledb-restore " in call)
    overrides = json.loads(run.split(" --overrides ", 1)[1].split(" --pod-running-timeout")[0])
    container = overrides["spec"]["containers"][0]
    assert (
        "sh /scripts/restore.sh /backups/tickpipe-20261201T031700Z.dump tickpipe_restored_" in container["command"][2]
    )
    assert 'RENAME TO \\"tickpipe\\"' in container["command"][2] or 'RENAME TO "tickpipe"' in container["command"][2]
    # The database's NetworkPolicy admits the backup runs' labels; the volume is only read.
    assert overrides["metadata"]["labels"]["app.kubernetes.io/name"] == "timescaledb-backup"
    assert overrides["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "tickpipe-timescaledb-backups",
        "readOnly": True,
    }


def test_a_failed_restore_starts_the_writers_again_and_says_the_database_is_unchanged(tmp_path: Path) -> None:
    rules = [["run tickpipe-timescaledb-restore", "restore: tickpipe-x.dump is not a pg_dump archive", 2], *RESTORE]
    result = run_script("restore.sh", tmp_path, rules, "tickpipe-x.dump")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "restore: FAILED: restore: the restore pod failed (above); tickpipe is unchanged and the writers run again"
    )
    assert any("scale statefulset/tickpipe-ingestor --replicas 1" in call for call in calls(tmp_path))


def test_restore_takes_only_a_dump_file_name(tmp_path: Path) -> None:
    result = run_script("restore.sh", tmp_path, RESTORE, "../etc/passwd")
    assert result.returncode == 1
    assert "restore: FAILED: arguments: DUMP is a file name" in result.stderr
    assert calls(tmp_path) == []
