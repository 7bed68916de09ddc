"""The Helm charts, rendered with the pinned helm (`make setup`), checked for what the schemas cannot see: the stages'
environment uses the names Settings reads, versions agree with versions.env, every pod is locked down, the parts of
the umbrella chart find each other, and Grafana's provisioning is the repository's grafana/ folder.

`make validate` checks the same renderings against the Kubernetes and CRD schemas and runs the security scanners.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tickpipe.config import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
TOOLS = REPO / ".deps" / "tools"
HELM = TOOLS / "bin" / "helm"
PARTS = ("kafka", "timescaledb", "migrator", "ingestor", "ma-job", "grafana")
STAGES = ("ingestor", "ma-job", "migrator")
SETTINGS = {name.upper() for name in Settings.model_fields}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}
# Flink's entrypoint writes its effective configuration and logs under /opt/flink, and PyFlink unpacks its runtime
# into the working directory (charts/ma-job/values.yaml says so where it is set).
WRITABLE_ROOT_FS = {"flink-main-container"}


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


VERSIONS = read_env(REPO / "versions.env") | read_env(REPO / "k8s" / "versions.env")


def helm(*args: str) -> str:
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: run `make setup` (setup/tools.sh installs the pinned helm)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def charts_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The charts with symbolic links resolved and the umbrella's file:// dependencies packaged, as validate does."""
    target = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(CHARTS, target, symlinks=False)
    helm("dependency", "build", "--skip-refresh", str(target / "tickpipe"))
    return target


def helm_template_args(charts: Path, chart: str, *values: Path, release: str = "demo", local: bool = True,
                       **sets: str) -> list[str]:  # fmt: skip
    """`local`: on a kind/minikube cluster with the images loaded (global.localCluster), so that no registry is
    needed; the renderings of the ci/*-values.yaml files set it themselves."""
    args = ["template", release, str(charts / chart), "--namespace", "tickpipe"]
    args += ["--kube-version", VERSIONS["KUBERNETES_VERSION"]]
    if local:
        args += ["--set", "global.localCluster=true"]
    for path in values:
        args += ["-f", str(path)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def render(charts: Path, chart: str, *values: Path, release: str = "demo", local: bool = True,
           **sets: str) -> list[dict[str, Any]]:  # fmt: skip
    args = helm_template_args(charts, chart, *values, release=release, local=local, **sets)
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


def render_error(charts: Path, chart: str, *values: Path, local: bool = True, **sets: str) -> str:
    """The error of a rendering that must fail (a value the chart refuses)."""
    args = helm_template_args(charts, chart, *values, local=local, **sets)
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)
    assert result.returncode != 0, f"helm {' '.join(args)} rendered; it should have refused the values"
    return result.stderr


def ci_cases() -> list[tuple[str, Path]]:
    return [(chart.name, path) for chart in sorted(CHARTS.iterdir()) for path in sorted((chart / "ci").glob("*.yaml"))]


@pytest.fixture(scope="module")
def renderings(charts_copy: Path) -> dict[str, list[dict[str, Any]]]:
    """Every chart with each of its ci/*-values.yaml."""
    cases = {f"{chart}:{path.name}": render(charts_copy, chart, path, local=False) for chart, path in ci_cases()}
    # The umbrella chart with the example overrides the skaffold profiles use (k8s/values-<profile>.yaml).
    for path in sorted((REPO / "k8s").glob("values-*.yaml")):
        cases[f"tickpipe:k8s/{path.name}"] = render(charts_copy, "tickpipe", path, release="tickpipe", local=False)
    return cases


@pytest.fixture(scope="module")
def umbrella(charts_copy: Path) -> list[dict[str, Any]]:
    return render(charts_copy, "tickpipe", release="tickpipe")


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of a workload, or of each pod template of a FlinkDeployment."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    if doc["kind"] == "Pod":
        yield where, doc["spec"]
    elif doc["kind"] in WORKLOADS:
        yield where, doc["spec"]["template"]["spec"]
    elif doc["kind"] == "CronJob":
        yield where, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif doc["kind"] == "FlinkDeployment":
        yield f"{where} podTemplate", doc["spec"]["podTemplate"]["spec"]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, found {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def container_env(docs: list[dict[str, Any]], chart: str) -> dict[str, Any]:
    """The environment the stage's main container gets: its ConfigMap (envFrom) and its env entries."""
    env: dict[str, Any] = {}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/name") != chart:
            continue
        for _, spec in pod_specs(doc):
            for container in spec["containers"]:
                for source in container.get("envFrom", []):
                    env |= configmaps.get(source.get("configMapRef", {}).get("name"), {})
                env |= {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}
    return env


# -- configuration: the names of src/tickpipe/config.py ---------------------------------------------------------------


@pytest.mark.parametrize("chart", STAGES)
def test_stage_values_only_set_variables_that_settings_reads(chart: str) -> None:
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    assert set(values["env"]) <= SETTINGS, set(values["env"]) - SETTINGS
    allowed = set(schema["properties"]["env"]["properties"])
    assert allowed <= SETTINGS, f"values.schema.json allows names Settings does not read: {allowed - SETTINGS}"


@pytest.mark.parametrize("chart", STAGES)
def test_rendered_stage_environment_uses_settings_names(
    renderings: dict[str, list[dict[str, Any]]], chart: str
) -> None:
    for case, docs in renderings.items():
        if case.startswith(f"{chart}:"):
            env = container_env(docs, chart)
            assert env, case
            # ENABLE_BUILT_IN_PLUGINS belongs to the Flink image's entrypoint, not to tickpipe.
            assert set(env) - {"ENABLE_BUILT_IN_PLUGINS"} <= SETTINGS, (case, set(env) - SETTINGS)


def test_database_secret_keys_are_the_password_settings(charts_copy: Path) -> None:
    secret = find(render(charts_copy, "timescaledb"), "Secret")
    assert set(secret["data"]) == {"DATABASE_PASSWORD", "DATABASE_WRITER_PASSWORD", "DATABASE_READER_PASSWORD"}
    assert set(secret["data"]) <= SETTINGS


def test_generated_passwords_differ_and_none_is_in_the_values(charts_copy: Path) -> None:
    secret = find(render(charts_copy, "timescaledb"), "Secret")
    assert len(set(secret["data"].values())) == 3
    for chart in CHARTS.iterdir():
        text = (chart / "values.yaml").read_text().lower()
        assert "password:" not in text, f"{chart.name}/values.yaml holds a password"


def test_an_existing_secret_replaces_the_generated_one(charts_copy: Path) -> None:
    docs = render(charts_copy, "timescaledb", CHARTS / "timescaledb" / "ci" / "existing-secret-values.yaml")
    assert not [d for d in docs if d["kind"] == "Secret"]
    env = {e["name"]: e for e in find(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "prices-db-credentials"


# -- versions ------------------------------------------------------------------------------------------------------


def chart_meta(chart: str) -> dict[str, Any]:
    return yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())  # type: ignore[no-any-return]


def chart_values(chart: str) -> dict[str, Any]:
    return yaml.safe_load((CHARTS / chart / "values.yaml").read_text())  # type: ignore[no-any-return]


def test_flink_deployment_runs_the_pinned_flink_version() -> None:
    major, minor, _ = VERSIONS["FLINK_VERSION"].split(".")
    values = chart_values("ma-job")
    assert values["flinkVersion"] == f"v{major}_{minor}"
    assert values["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{VERSIONS['FLINK_VERSION']}.jar"
    for path in (CHARTS / "ma-job" / "ci").glob("*.yaml"):
        text = path.read_text()
        for version in {
            part.split(".jar")[0].rsplit("-", 1)[-1] for part in text.split("flink-")[1:] if ".jar" in part
        }:
            assert version == VERSIONS["FLINK_VERSION"], f"{path.name} names Flink {version}"


def test_pinned_flink_operator_supports_the_flink_version() -> None:
    schema_file = TOOLS / "schemas" / "crds" / "flink.apache.org" / "flinkdeployment_v1beta1.json"
    if not schema_file.is_file():
        pytest.fail(f"{schema_file} is missing: run `make setup`")
    schema = json.loads(schema_file.read_text())
    supported = schema["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
    assert chart_values("ma-job")["flinkVersion"] in supported
    annotation = chart_meta("ma-job")["annotations"]["tickpipe.dev/flink-operator-version"]
    assert annotation == VERSIONS["FLINK_OPERATOR_VERSION"]


def test_kafka_chart_runs_the_pinned_kafka_and_strimzi() -> None:
    values, meta = chart_values("kafka"), chart_meta("kafka")
    assert str(values["version"]) == VERSIONS["KAFKA_VERSION"] == meta["appVersion"]
    assert values["test"]["image"] == f"apache/kafka:{VERSIONS['KAFKA_VERSION']}"
    assert meta["annotations"]["tickpipe.dev/strimzi-version"] == VERSIONS["STRIMZI_VERSION"]


@pytest.mark.parametrize(
    ("chart", "variable"), [("timescaledb", "TIMESCALEDB_IMAGE_TAG"), ("grafana", "GRAFANA_VERSION")]
)
def test_platform_images_are_the_pinned_versions(chart: str, variable: str) -> None:
    assert chart_meta(chart)["appVersion"] == VERSIONS[variable]
    assert chart_values(chart)["image"]["tag"] == ""  # the appVersion, not a second place to update
    compose_env = REPO / ".env"
    if compose_env.is_file() and variable in read_env(compose_env):
        assert read_env(compose_env)[variable] == VERSIONS[variable], "compose and the charts run different images"


def test_no_image_is_unpinned(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for case, docs in renderings.items():
        for doc in docs:
            for where, spec in pod_specs(doc):
                for container in spec["containers"]:
                    image = container.get("image", doc.get("spec", {}).get("image", ""))
                    assert ":" in image and not image.endswith(":latest"), (case, where, image)


# -- security and operability ----------------------------------------------------------------------------------------


def test_every_pod_runs_non_root_without_capabilities(renderings: dict[str, list[dict[str, Any]]]) -> None:
    seen = 0
    for case, docs in renderings.items():
        for doc in docs:
            for where, spec in pod_specs(doc):
                seen += 1
                pod = spec.get("securityContext", {})
                assert pod.get("runAsNonRoot") is True, (case, where)
                assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", (case, where)
                if doc["kind"] != "Pod" or "helm.sh/hook" not in doc["metadata"].get("annotations", {}):
                    # The API token only where the pod calls the API: the operator's Flink pods, and ingestor
                    # replicas electing a leader (their Role allows only their Lease).
                    electing = any(
                        e.get("name") == "INGEST_IDENTITY" for c in spec["containers"] for e in c.get("env", [])
                    )
                    assert spec.get("automountServiceAccountToken") is electing or doc["kind"] == "FlinkDeployment"
                for container in spec["containers"]:
                    context = container.get("securityContext", {})
                    assert context.get("allowPrivilegeEscalation") is False, (case, where, container["name"])
                    assert context.get("capabilities", {}).get("drop") == ["ALL"], (case, where, container["name"])
                    assert context.get("privileged") in (None, False)
                    read_only = context.get("readOnlyRootFilesystem")
                    assert read_only is True or container["name"] in WRITABLE_ROOT_FS, (case, where)
    assert seen > 30


def test_every_container_has_requests_and_limits(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for case, docs in renderings.items():
        for doc in docs:
            if doc["kind"] == "FlinkDeployment":  # Flink sizes its containers from spec.*.resource
                for role in ("jobManager", "taskManager"):
                    assert {"cpu", "memory"} <= set(doc["spec"][role]["resource"]), (case, role)
                continue
            for where, spec in pod_specs(doc):
                for container in spec["containers"]:
                    resources = container.get("resources", {})
                    assert resources.get("requests") and resources.get("limits"), (case, where)
                    assert "memory" in resources["limits"], (case, where)


def test_long_running_containers_have_probes(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for case, docs in renderings.items():
        for doc in docs:
            if doc["kind"] in {"Deployment", "StatefulSet"}:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    assert "livenessProbe" in container and "readinessProbe" in container, (case, container["name"])
            if doc["kind"] == "FlinkDeployment":
                jobmanager = doc["spec"]["jobManager"]["podTemplate"]["spec"]["containers"][0]
                assert "livenessProbe" in jobmanager and "readinessProbe" in jobmanager, case


def test_every_object_carries_the_recommended_labels(renderings: dict[str, list[dict[str, Any]]]) -> None:
    required = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"}  # fmt: skip
    for case, docs in renderings.items():
        for doc in docs:
            labels = set(doc["metadata"].get("labels", {}))
            assert required <= labels, (case, doc["kind"], doc["metadata"]["name"], required - labels)


def test_no_service_selects_a_helm_test_pod(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for case, docs in renderings.items():
        tests = [d for d in docs if d["kind"] == "Pod"]
        for service in (d for d in docs if d["kind"] == "Service"):
            selector = service["spec"].get("selector", {})
            for pod in tests:
                labels = pod["metadata"]["labels"]
                assert not all(labels.get(k) == v for k, v in selector.items()), (case, service["metadata"]["name"])


def test_stage_charts_restrict_their_network(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for chart in ("ingestor", "ma-job", "migrator", "timescaledb", "grafana"):
        docs = renderings[f"{chart}:default-values.yaml"]
        policy = find(docs, "NetworkPolicy", f"-{chart}")
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, chart


@pytest.mark.parametrize("chart", sorted(path.name for path in CHARTS.iterdir() if (path / "Chart.yaml").is_file()))
def test_every_chart_has_a_schema_ci_values_a_helm_test_and_documented_values(chart: str) -> None:
    folder = CHARTS / chart
    schema = json.loads((folder / "values.schema.json").read_text())
    assert schema.get("additionalProperties") is False, "a typo in a value must fail at install"
    assert list((folder / "ci").glob("*-values.yaml"))
    assert list((folder / "templates" / "tests").glob("*.yaml"))
    lines = (folder / "values.yaml").read_text().splitlines()
    values = chart_values(chart)
    for key in values:
        block = [i for i, line in enumerate(lines) if line.startswith(f"{key}:")]
        assert block, key
        start = block[0]
        end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()
                    and not lines[i].startswith("#")), len(lines))  # fmt: skip
        documented = any(line.lstrip().startswith("# --") for line in lines[max(0, start - 3) : end])
        assert documented, f"{chart}/values.yaml: `{key}` has no `# --` description"


# -- the MA job and the migrator -------------------------------------------------------------------------------------


def test_flink_deployment_upgrades_with_savepoints_and_is_highly_available(charts_copy: Path) -> None:
    deployment = find(render(charts_copy, "ma-job"), "FlinkDeployment")
    spec, conf = deployment["spec"], deployment["spec"]["flinkConfiguration"]
    assert spec["job"]["upgradeMode"] == "savepoint"
    assert spec["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert spec["job"]["args"] == ["-pym", "tickpipe.ma_job.job"]
    assert conf["high-availability.type"] == "kubernetes" and conf["high-availability.storageDir"]
    assert conf["state.checkpoints.dir"] and conf["state.savepoints.dir"]
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"


def test_the_job_module_the_flink_deployment_starts_exists() -> None:
    module = chart_values("ma-job")["job"]["args"][1]
    path = REPO / "services" / "ma-job" / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file() and "def main(" in path.read_text()


def test_job_and_cluster_agree_on_parallelism_and_checkpoint_interval(charts_copy: Path) -> None:
    docs = render(charts_copy, "ma-job", CHARTS / "ma-job" / "ci" / "s3-ha-values.yaml")
    deployment, env = find(docs, "FlinkDeployment"), find(docs, "ConfigMap", "-env")["data"]
    assert env["JOB_PARALLELISM"] == str(deployment["spec"]["job"]["parallelism"])
    interval = deployment["spec"]["flinkConfiguration"]["execution.checkpointing.interval"]
    assert interval == f"{env['CHECKPOINT_INTERVAL_SECONDS']}s"


def test_migrator_is_a_hook_before_install_and_upgrade(charts_copy: Path) -> None:
    job = find(render(charts_copy, "migrator"), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "migrate"


def test_umbrella_migrates_after_its_own_database_exists(umbrella: list[dict[str, Any]]) -> None:
    job = find(umbrella, "Job", "-migrator")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


# -- the umbrella chart: parts that find each other ------------------------------------------------------------------


def test_stages_point_at_the_kafka_and_database_of_the_release(umbrella: list[dict[str, Any]]) -> None:
    kafka = find(umbrella, "Kafka")
    listener_port = kafka["spec"]["kafka"]["listeners"][0]["port"]
    database = find(umbrella, "Service", "-timescaledb")
    for chart in ("ingestor", "ma-job"):
        for server in container_env(umbrella, chart)["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            assert server == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener_port}", chart
    for chart in ("ma-job", "migrator"):
        url = urlsplit(container_env(umbrella, chart)["DATABASE_URL"])
        assert (url.hostname, url.port) == (database["metadata"]["name"], database["spec"]["ports"][0]["port"])
    topics = {t["spec"]["topicName"] for t in umbrella if t["kind"] == "KafkaTopic"}
    assert {
        container_env(umbrella, "ingestor")["KAFKA_TOPIC"],
        container_env(umbrella, "ingestor")["KAFKA_DLQ_TOPIC"],
    } <= topics
    grafana = container_env(umbrella, "grafana")
    assert grafana["DATABASE_HOST"] == database["metadata"]["name"]


def test_every_secret_reference_resolves_to_a_secret_of_the_release(umbrella: list[dict[str, Any]]) -> None:
    secrets = {d["metadata"]["name"]: set(d["data"]) for d in umbrella if d["kind"] == "Secret"}
    references = 0
    for doc in umbrella:
        for where, spec in pod_specs(doc):
            for container in spec["containers"]:
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        references += 1
                        assert ref["key"] in secrets.get(ref["name"], set()), (where, ref)
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets, where
    assert references >= 6


@pytest.mark.parametrize("part", PARTS)
def test_each_part_of_the_umbrella_can_be_switched_off(charts_copy: Path, part: str) -> None:
    docs = render(charts_copy, "tickpipe", release="tickpipe", **{f"{part}.enabled": "false"})
    charts = {d["metadata"]["labels"]["helm.sh/chart"].rsplit("-", 1)[0] for d in docs}
    assert part not in charts
    assert set(PARTS) - {part} <= charts


# -- Grafana: the chart ships the repository's grafana/ files ---------------------------------------------------------


def test_grafana_chart_reads_the_repository_grafana_folder() -> None:
    link = CHARTS / "grafana" / "files" / "grafana"
    assert link.is_symlink() and link.resolve() == (REPO / "grafana").resolve()


def test_grafana_provisioning_is_byte_for_byte_the_grafana_folder(charts_copy: Path) -> None:
    docs = render(charts_copy, "grafana")
    deployment = find(docs, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    provisioning = find(docs, "ConfigMap", "-provisioning")["data"]
    shipped = {f"provisioning/{item['path']}": provisioning[item["key"]]
               for item in volumes["provisioning"]["configMap"]["items"]}  # fmt: skip
    shipped |= {f"dashboards/{name}": text for name, text in find(docs, "ConfigMap", "-dashboards")["data"].items()}
    on_disk = {str(path.relative_to(REPO / "grafana")): path.read_text()
               for path in (REPO / "grafana").rglob("*") if path.is_file()}  # fmt: skip
    assert shipped == on_disk


def test_grafana_mounts_dashboards_where_the_provider_looks(charts_copy: Path) -> None:
    provider = yaml.safe_load((REPO / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    paths = {p["options"]["path"] for p in provider["providers"]}
    container = find(render(charts_copy, "grafana"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert paths == {mounts["dashboards"]}
    assert mounts["provisioning"] == "/etc/grafana/provisioning"


def test_grafana_sets_every_variable_its_provisioning_uses(charts_copy: Path) -> None:
    used: set[str] = set()
    for path in (REPO / "grafana" / "provisioning").rglob("*.y*ml"):
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text()))
    env = container_env(render(charts_copy, "grafana"), "grafana")
    assert used <= set(env), used - set(env)


# -- what a real cluster rejects or cannot schedule (defects found on clusters, checked on every rendering) ------------


def string_maps(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every label map of a manifest: labels, matchLabels and nodeSelector, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"labels", "matchLabels", "nodeSelector"} and isinstance(value, dict):
                yield f"{where}.{key}", value
            yield from string_maps(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from string_maps(item, f"{where}[{index}]")


def test_every_label_and_node_selector_value_is_a_string(renderings: dict[str, list[dict[str, Any]]]) -> None:
    """The API server rejects a label or nodeSelector value that is not a string (e.g. a YAML boolean `true`)."""
    seen = 0
    for case, docs in renderings.items():
        for doc in docs:
            for where, labels in string_maps(doc):
                seen += 1
                bad = {key: value for key, value in labels.items() if not isinstance(value, str)}
                assert not bad, (case, doc["kind"], doc["metadata"]["name"], where, bad)
    assert seen > 100


def claim_access_modes(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {d["metadata"]["name"]: d["spec"]["accessModes"] for d in docs if d["kind"] == "PersistentVolumeClaim"}


def pod_claims(spec: dict[str, Any]) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]


def flink_claims(name: str, spec: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """The claims of a FlinkDeployment's pods: the shared template is every pod's, the role templates their own."""
    jobmanagers = int(spec["jobManager"].get("replicas", 1))
    slots = int(spec["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
    taskmanagers = -(-int(spec["job"]["parallelism"]) // slots)
    for claim in pod_claims(spec.get("podTemplate", {}).get("spec", {})):
        yield claim, f"{name} (JobManagers and TaskManagers)", jobmanagers + taskmanagers
    for role, count in (("jobManager", jobmanagers), ("taskManager", taskmanagers)):
        for claim in pod_claims(spec[role].get("podTemplate", {}).get("spec", {})):
            yield claim, f"{name} {role}", count


def claims_mounted(docs: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(claim, who, how many pods at most) for every pod template that mounts a PersistentVolumeClaim."""
    out: list[tuple[str, str, int]] = []
    for doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        if kind == "FlinkDeployment":
            out += flink_claims(name, spec)
            continue
        if kind in {"Deployment", "StatefulSet"}:
            pods = int(spec.get("replicas", 1))
            if kind == "Deployment" and spec.get("strategy", {}).get("type") != "Recreate":
                pods += 1  # a rolling update runs the new pod beside the old one
        elif kind == "CronJob":
            pods = 1 if spec.get("concurrencyPolicy") == "Forbid" else 2
        else:
            pods = 1
        for _, pod in pod_specs(doc):
            out += [(claim, f"{kind}/{name}", pods) for claim in pod_claims(pod)]
    return out


def test_no_two_pods_of_a_release_mount_the_same_read_write_once_claim(
    renderings: dict[str, list[dict[str, Any]]],
) -> None:
    """A ReadWriteOnce volume attaches to one node: a second pod on another node of a real cluster never starts.
    A claim the release does not create (existingClaim) counts as ReadWriteOnce."""
    checked = 0
    for case, docs in renderings.items():
        modes = claim_access_modes(docs)
        pods: dict[str, list[tuple[str, int]]] = {}
        for claim, who, count in claims_mounted(docs):
            pods.setdefault(claim, []).append((who, count))
        for claim, users in pods.items():
            if "ReadWriteMany" in modes.get(claim, []):
                continue
            checked += 1
            assert sum(count for _, count in users) <= 1, (case, claim, users)
    assert checked >= 5


def strimzi_pod_templates(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `template.pod` (and `template.*Pod`) of a Strimzi resource, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template" and isinstance(value, dict):
                for part, template in value.items():
                    if (part == "pod" or part.endswith("Pod")) and isinstance(template, dict):
                        yield f"{where}.template.{part}", template
            yield from strimzi_pod_templates(value, f"{where}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from strimzi_pod_templates(item, where)


def test_strimzi_pod_templates_that_set_a_security_context_keep_an_fs_group(
    renderings: dict[str, list[dict[str, Any]]],
) -> None:
    """A pod securityContext in a Strimzi template replaces Strimzi's default, whose fsGroup 0 makes a fresh block
    volume (EBS, Persistent Disk, Azure Disk) writable for the broker."""
    checked = 0
    for case, docs in renderings.items():
        for doc in docs:
            if not doc["apiVersion"].startswith("kafka.strimzi.io/"):
                continue
            for where, template in strimzi_pod_templates(doc["spec"]):
                if "securityContext" in template:
                    checked += 1
                    assert "fsGroup" in template["securityContext"], (case, doc["kind"], where)
    assert checked >= 4


def test_flink_pods_only_run_on_amd64_nodes_unless_a_local_profile_says_otherwise(
    renderings: dict[str, list[dict[str, Any]]],
) -> None:
    """The ma-job image is linux/amd64 only (PyFlink 1.20 has no Linux arm64 wheel)."""
    for case, docs in renderings.items():
        for doc in docs:
            if doc["kind"] == "FlinkDeployment":
                selector = doc["spec"]["podTemplate"]["spec"].get("nodeSelector", {})
                expected = None if case.startswith("tickpipe:k8s/") else "amd64"
                assert selector.get("kubernetes.io/arch") == expected, case


def test_ma_job_schema_refuses_volumes_a_multi_node_cluster_cannot_attach(charts_copy: Path) -> None:
    refused = [
        {"checkpoints.storage": "filesystem"},  # every TaskManager would mount the ReadWriteOnce claim
        {"jobManager.replicas": "2"},  # two JobManagers on the ReadWriteOnce claim
        {"persistence.enabled": "false"},  # file:// dirs with no volume behind them
    ]
    for sets in refused:
        error = render_error(charts_copy, "ma-job", **sets)
        assert "values don't meet the specifications of the schema" in error, (sets, error)
    # ReadWriteMany makes both possible; an object store needs no volume.
    docs = render(charts_copy, "ma-job", **{"checkpoints.storage": "filesystem", "jobManager.replicas": "2",
                                             "persistence.accessModes[0]": "ReadWriteMany"})  # fmt: skip
    assert find(docs, "FlinkDeployment")["spec"]["podTemplate"]["spec"]["volumes"]


def test_by_default_only_the_jobmanager_mounts_the_flink_volume_and_state_goes_through_it(charts_copy: Path) -> None:
    spec = find(render(charts_copy, "ma-job"), "FlinkDeployment")["spec"]
    assert spec["flinkConfiguration"]["execution.checkpointing.storage"] == "jobmanager"
    assert "volumes" not in spec["podTemplate"]["spec"]
    assert "volumes" not in spec["taskManager"]["podTemplate"]["spec"]
    mounts = spec["jobManager"]["podTemplate"]["spec"]["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "flink-data", "mountPath": "/flink-data"}]
    for key in ("state.checkpoints.dir", "state.savepoints.dir", "high-availability.storageDir"):
        assert spec["flinkConfiguration"][key].startswith("file:///flink-data/"), key


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_image_without_a_registry_outside_a_local_cluster_fails_in_one_line_naming_the_value(
    charts_copy: Path, stage: str
) -> None:
    error = render_error(charts_copy, stage, local=False).strip()
    # Helm's own advice follows on later lines; the chart's message is one line that names the value.
    assert f"image.registry is required ({stage}.image.registry in the umbrella chart)" in error.splitlines()[0]
    kind = {"ma-job": "FlinkDeployment", "migrator": "Job", "ingestor": "StatefulSet"}[stage]
    workload = find(
        render(charts_copy, stage, local=False, **{"image.registry": "ghcr.io/you", "image.tag": "1.2.3"}), kind
    )
    spec = workload["spec"]
    found = spec["image"] if stage == "ma-job" else spec["template"]["spec"]["containers"][0]["image"]
    assert found == f"ghcr.io/you/tickpipe-{stage}:1.2.3"


def test_the_umbrella_without_a_registry_fails_outside_a_local_cluster(charts_copy: Path) -> None:
    error = render_error(charts_copy, "tickpipe", local=False)
    assert "image.registry is required" in error


# -- the dev profiles: the simulated exchange instead of Binance ------------------------------------------------------


@pytest.mark.parametrize("profile", ["kind", "minikube"])
def test_dev_profiles_run_the_ingestor_against_the_simulator_deployed_beside_it(
    renderings: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = renderings[f"tickpipe:k8s/values-{profile}.yaml"]
    sim, service = find(docs, "Deployment", "-sim"), find(docs, "Service", "-sim")
    url = urlsplit(container_env(docs, "ingestor")["BINANCE_WS_URL"])
    assert (url.scheme, url.hostname, url.port) == (
        "ws",
        service["metadata"]["name"],
        service["spec"]["ports"][0]["port"],
    )
    container = sim["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["sim"]
    assert str(service["spec"]["ports"][0]["port"]) == container["args"][container["args"].index("--port") + 1]
    # The sim's pods are not the ingestor's: no Service or NetworkPolicy of the ingestor selects them.
    sim_labels = sim["spec"]["template"]["metadata"]["labels"]
    ingestor = find(docs, "Service", "-ingestor")["spec"]["selector"]
    assert not all(sim_labels.get(k) == v for k, v in ingestor.items())
    # The ingestor may reach it (an ipBlock need not match pod addresses).
    policy = find(docs, "NetworkPolicy", "-ingestor")
    peers = [peer for rule in policy["spec"]["egress"] for peer in rule.get("to", [])]
    assert any(all(sim_labels.get(k) == v for k, v in p.get("podSelector", {}).get("matchLabels", {}).items())
               and p.get("podSelector", {}).get("matchLabels") for p in peers)  # fmt: skip


def test_ingestor_readiness_means_ready_to_produce_and_the_chart_says_so() -> None:
    values = (CHARTS / "ingestor" / "values.yaml").read_text()
    assert chart_values("ingestor")["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "tickpipe_ingest_exchange_connected" in values and "ready to produce" in values
    assert chart_values("ingestor")["sim"]["enabled"] is False  # a release reads Binance unless told otherwise


# -- Grafana, Kafka, backups ------------------------------------------------------------------------------------------


def test_grafana_logs_to_the_console_on_its_read_only_root_filesystem(charts_copy: Path) -> None:
    env = container_env(render(charts_copy, "grafana"), "grafana")
    assert env["GF_LOG_MODE"] == "console"


def test_kafka_brokers_keep_strimzis_fs_group_for_their_volumes(charts_copy: Path) -> None:
    pool = find(render(charts_copy, "kafka"), "KafkaNodePool")
    assert pool["spec"]["template"]["pod"]["securityContext"]["fsGroup"] == 0


def test_database_backup_runs_the_charts_pg_dump_script_one_run_at_a_time(charts_copy: Path) -> None:
    docs = render(charts_copy, "timescaledb")
    cron = find(docs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["sh", "/scripts/backup.sh", "/backups"]
    scripts = find(docs, "ConfigMap", "-backup-scripts")["data"]
    for name in ("backup.sh", "restore.sh"):
        assert scripts[name].strip() == (CHARTS / "timescaledb" / "files" / name).read_text().strip()
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PGHOST"]["value"] == find(docs, "Service")["metadata"]["name"]
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_PASSWORD"
    claim = find(docs, "PersistentVolumeClaim", "-backups")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The database admits the backup runs even when networkPolicy.allowFrom is narrowed.
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    policy = find(docs, "NetworkPolicy", "-timescaledb")
    peers = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
    assert any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") ==
               labels["app.kubernetes.io/name"] for p in peers)  # fmt: skip


def test_with_a_registry_every_tickpipe_image_of_the_release_comes_from_it(
    renderings: dict[str, list[dict[str, Any]]],
) -> None:
    """The helm test pods too: a cluster that pulls from a registry has no bare `tickpipe-*` image."""
    docs = renderings["tickpipe:stages-only-values.yaml"]
    images = [container.get("image") or doc["spec"]["image"]
              for doc in docs for _, spec in pod_specs(doc) for container in spec["containers"]]  # fmt: skip
    ours = [image for image in images if "tickpipe-" in image]
    assert len(ours) >= 4
    assert all(image.startswith("registry.example.com/tickpipe/tickpipe-") for image in ours), ours


# -- Kafka TLS + SASL/SCRAM and the ingestor's spill volume ----------------------------------------------------------

PRODUCTION = CHARTS / "tickpipe" / "ci" / "production-values.yaml"


@pytest.fixture(scope="module")
def production(charts_copy: Path) -> list[dict[str, Any]]:
    """The umbrella chart as in production: Strimzi's TLS listener with SCRAM-SHA-512 and ACLs, no plain listener."""
    return render(charts_copy, "tickpipe", PRODUCTION, release="prices", local=False)


def layered_pods(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of each pod a workload runs; a FlinkDeployment's JobManager and TaskManager pods are its
    shared template with the role's template over it (lists joined: test_flink_template_layers_... keeps them apart)."""
    if doc["kind"] != "FlinkDeployment":
        yield from pod_specs(doc)
        return
    shared = doc["spec"]["podTemplate"]["spec"]
    for role in ("jobManager", "taskManager"):
        own = doc["spec"][role].get("podTemplate", {}).get("spec", {})
        main, extra = shared["containers"][0], (own.get("containers") or [{}])[0]
        container = {**main, **extra}
        for key in ("env", "envFrom", "volumeMounts"):
            container[key] = main.get(key, []) + extra.get(key, [])
        pod = {**shared, "containers": [container], "volumes": shared.get("volumes", []) + own.get("volumes", [])}
        yield f"FlinkDeployment/{doc['metadata']['name']} {role}", pod


def effective_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """A container's variables: its ConfigMaps (envFrom) under its own `env` entries (a value or a valueFrom)."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env |= configmaps.get(source.get("configMapRef", {}).get("name"), {})
    env |= {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}
    return env


def mounted_file(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str, str]:
    """(kind, name, key) of the Secret or ConfigMap item a container sees at `path` (through a whole-volume mount)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(directory) and "subPath" not in mount:
            volume, file = volumes[mount["name"]], path.removeprefix(directory)
            for kind, name_key in (("secret", "secretName"), ("configMap", "name")):
                if kind in volume:
                    source = volume[kind]
                    keys = {item["path"]: item["key"] for item in source.get("items", [])}
                    assert mount.get("readOnly") is True, (mount, "certificates are mounted read-only")
                    return kind, source[name_key], keys.get(file, file)
    raise AssertionError(f"nothing is mounted at {path} in {container['name']}")


def kafka_clients(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(where, pod, container, env) of every container that talks to Kafka: the ingestor, the MA job's JobManager
    (it builds the job) and TaskManagers (they run its Kafka clients), and the Kafka chart's `helm test` pod."""
    clients = []
    for doc in docs:
        for where, pod in layered_pods(doc):
            for container in pod["containers"]:
                env = effective_env(docs, container)
                if "KAFKA_BOOTSTRAP_SERVERS" in env or "kafka-topics.sh" in " ".join(container.get("command", [])):
                    clients.append((where, pod, container, env))
    return clients


def test_production_kafka_serves_only_a_tls_listener_with_scram_and_a_user_per_client(
    production: list[dict[str, Any]],
) -> None:
    kafka = find(production, "Kafka")["spec"]["kafka"]
    assert kafka["listeners"] == [
        {"name": "tls", "port": 9093, "type": "internal", "tls": True,
         "authentication": {"type": "scram-sha-512"}, "networkPolicyPeers": kafka["listeners"][0]["networkPolicyPeers"]}
    ]  # fmt: skip
    assert kafka["authorization"] == {"type": "simple"}
    assert "userOperator" in find(production, "Kafka")["spec"]["entityOperator"]
    users = {d["metadata"]["labels"]["tickpipe.dev/client"]: d for d in production if d["kind"] == "KafkaUser"}
    assert set(users) == {"ingestor", "ma-job", "candle-job", "tools"}
    for client, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "prices", client
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}, client
        assert user["spec"]["authorization"]["acls"], client
    topics = {t["spec"]["topicName"] for t in production if t["kind"] == "KafkaTopic"}
    for user in users.values():
        for acl in user["spec"]["authorization"]["acls"]:
            if acl["resource"]["type"] == "topic":
                assert acl["resource"]["name"] in topics, (user["metadata"]["name"], acl)


def test_production_kafka_clients_authenticate_with_their_users_secret_and_trust_the_cluster_ca(
    production: list[dict[str, Any]],
) -> None:
    """Every Kafka client pod: SASL_SSL with SCRAM-SHA-512 on the TLS listener, as its own KafkaUser; the password
    from the Secret Strimzi writes for that user (a secretKeyRef, never a value); KAFKA_SSL_CA_LOCATION a file mounted
    from the cluster CA's Secret."""
    kafka = find(production, "Kafka")
    cluster = kafka["metadata"]["name"]
    tls_port = next(item["port"] for item in kafka["spec"]["kafka"]["listeners"] if item["tls"])
    users = {d["metadata"]["name"] for d in production if d["kind"] == "KafkaUser"}
    clients = kafka_clients(production)
    assert {where.split()[-1] for where, *_ in clients} >= {"jobManager", "taskManager"}
    assert any(where.startswith("StatefulSet/") for where, *_ in clients)
    assert any(where.startswith("Pod/") for where, *_ in clients)
    for where, pod, container, env in clients:
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", where
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", where
        assert env["KAFKA_SASL_USERNAME"] in users, where
        assert env["KAFKA_SASL_PASSWORD"] == {
            "secretKeyRef": {"name": env["KAFKA_SASL_USERNAME"], "key": "password"}
        }, where
        for server in env.get("KAFKA_BOOTSTRAP_SERVERS", f"{cluster}-kafka-bootstrap:{tls_port}").split(","):
            assert server == f"{cluster}-kafka-bootstrap:{tls_port}", where
        ca = mounted_file(pod, container, env["KAFKA_SSL_CA_LOCATION"])
        assert ca == ("secret", f"{cluster}-cluster-ca-cert", "ca.crt"), where
    # The kafka chart's own test reaches the TLS listener too (there is no plain one).
    test_pod = next(c for where, _, c, _ in clients if where.startswith("Pod/"))
    assert f"{cluster}-kafka-bootstrap:{tls_port} --command-config" in test_pod["command"][-1]


def test_no_password_is_a_value_in_any_manifest(renderings: dict[str, list[dict[str, Any]]],
                                                production: list[dict[str, Any]]) -> None:  # fmt: skip
    """A variable holding a password comes from a Secret (secretKeyRef); no ConfigMap carries one."""
    checked = 0
    for case, docs in {**renderings, "tickpipe:production": production}.items():
        for doc in docs:
            if doc["kind"] == "ConfigMap":
                assert not [key for key in doc.get("data", {}) if "PASSWORD" in key], (case, doc["metadata"]["name"])
            for where, pod in pod_specs(doc):
                for container in pod["containers"]:
                    for item in container.get("env", []):
                        if "PASSWORD" in item["name"] and item["name"] != "GF_SECURITY_ADMIN_PASSWORD__FILE":
                            checked += 1
                            assert "value" not in item and "secretKeyRef" in item["valueFrom"], (case, where, item)
    assert checked >= 10


@pytest.mark.parametrize("chart", ["ingestor", "ma-job"])
def test_a_kafka_client_chart_with_sasl_but_no_password_secret_fails_in_one_line(charts_copy: Path, chart: str) -> None:
    error = render_error(charts_copy, chart, **{"env.KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                                 "env.KAFKA_SASL_USERNAME": "someone"})  # fmt: skip
    assert "needs kafkaSecurity.passwordSecret.name" in error.strip().splitlines()[0], error
    error = render_error(charts_copy, chart, **{"env.KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                                 "kafkaSecurity.passwordSecret.name": "someone"})  # fmt: skip
    assert "needs env.KAFKA_SASL_USERNAME" in error.strip().splitlines()[0], error


@pytest.mark.parametrize(
    ("chart", "sets"),
    [
        ("ingestor", {"env.KAFKA_SASL_PASSWORD": "hunter2"}),  # a literal password: only from a Secret
        ("ma-job", {"env.KAFKA_SASL_PASSWORD": "hunter2"}),
        ("ingestor", {"env.KAFKA_SSL_CA_LOCATION": "/ca.pem"}),  # a path: only to what kafkaSecurity.ca mounts
        ("ma-job", {"env.DATABASE_SSL_ROOT_CERT": "/ca.pem"}),
        ("ingestor", {"env.KAFKA_SECURITY_PROTOCOL": "TLS"}),
        ("ma-job", {"env.KAFKA_SASL_MECHANISM": "PLAIN"}),
        ("ingestor", {"kafkaSecurity.passwordSecrett.name": "x"}),  # typos
        ("ma-job", {"kafkaSecurity.ca.secretname": "x"}),
        ("ma-job", {"database.ca.secret": "x"}),
        ("ingestor", {"spill.sise": "1Gi"}),
        ("ingestor", {"spill.size": "1GB"}),  # INGEST_SPILL_MAX_BYTES is computed: binary units only
        ("ingestor", {"spill.volumeType": "hostPath"}),
        ("ingestor", {"env.INGEST_SPILL_MAX_BYTES": "5"}),  # from spill.size, not set by hand
        ("kafka", {"tlsListner.enabled": "true"}),
        ("kafka", {"users.ingestor.acls[0].operations[0]": "Write"}),
    ],
)
def test_schemas_refuse_literal_secrets_and_typos(charts_copy: Path, chart: str, sets: dict[str, str]) -> None:
    error = render_error(charts_copy, chart, **sets)
    assert "values don't meet the specifications of the schema" in error, (sets, error)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"listener.enabled": "false"}, "listener.enabled and tlsListener.enabled are both false"),
        ({"authorization.enabled": "true"}, "authorization.enabled needs tlsListener.enabled"),
        ({"authorization.enabled": "true", "tlsListener.enabled": "true"}, "needs listener.enabled=false"),
        ({"listener.enabled": "false", "tlsListener.enabled": "true", "users.tools.enabled": "false"},
         "needs users.tools.enabled"),
    ],
)  # fmt: skip
def test_kafka_listener_settings_that_lock_clients_out_fail_in_one_line(
    charts_copy: Path, sets: dict[str, str], message: str
) -> None:
    assert message in render_error(charts_copy, "kafka", **sets).strip().splitlines()[0]


def test_kafka_chart_defaults_and_dev_profiles_stay_plaintext(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for case in ("kafka:default-values.yaml", "tickpipe:default-values.yaml", "tickpipe:k8s/values-kind.yaml",
                 "tickpipe:k8s/values-minikube.yaml"):  # fmt: skip
        docs = renderings[case]
        listeners = find(docs, "Kafka")["spec"]["kafka"]["listeners"]
        assert [(item["name"], item["tls"]) for item in listeners] == [("plain", False)], case
        assert not [d for d in docs if d["kind"] == "KafkaUser"], case
        for where, _, _, env in kafka_clients(docs):
            assert env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") == "PLAINTEXT", (case, where)


def test_ma_job_trusts_the_database_ca_it_mounts(renderings: dict[str, list[dict[str, Any]]]) -> None:
    """ci/s3-ha-values.yaml: sslmode=verify-full with the CA from a Secret; the Kafka CA from a ConfigMap."""
    docs = renderings["ma-job:s3-ha-values.yaml"]
    for where, pod in layered_pods(find(docs, "FlinkDeployment")):
        container = pod["containers"][0]
        env = effective_env(docs, container)
        assert "sslmode=verify-full" in env["DATABASE_URL"]
        assert mounted_file(pod, container, env["DATABASE_SSL_ROOT_CERT"]) == ("secret", "tickpipe-db-ca", "ca.crt")
        assert mounted_file(pod, container, env["KAFKA_SSL_CA_LOCATION"]) == ("configMap", "kafka-ca", "ca.crt")
        assert env["KAFKA_SASL_PASSWORD"]["secretKeyRef"]["name"] == "tickpipe-ma-job", where


def flink_variants(charts: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    tls = {"kafkaSecurity.ca.secretName": "ca", "database.ca.configMapName": "db-ca",
           "kafkaSecurity.clientCertificate.secretName": "client"}  # fmt: skip
    variants: dict[str, dict[str, str]] = {
        "defaults": {},
        "tls": tls,
        "tls, shared volume": {
            **tls,
            "checkpoints.storage": "filesystem",
            "persistence.accessModes[0]": "ReadWriteMany",
        },
        "tls, object store": {
            **tls,
            "persistence.enabled": "false",
            "checkpoints.dir": "s3://b/c",
            "savepoints.dir": "s3://b/s",
            "highAvailability.storageDir": "s3://b/h",
        },
    }
    for name, sets in variants.items():
        yield name, find(render(charts, "ma-job", **sets), "FlinkDeployment")


def test_flink_template_layers_never_both_list_volumes_or_mounts(charts_copy: Path) -> None:
    """The operator merges a role's pod template over the shared one list by position: volumes (or mounts) listed
    in both layers would be mixed into each other. Each role sees every certificate and /flink-data where needed."""
    for name, deployment in flink_variants(charts_copy):
        spec = deployment["spec"]
        shared = spec["podTemplate"]["spec"]
        for role in ("jobManager", "taskManager"):
            own = spec[role]["podTemplate"]["spec"]
            assert not (shared.get("volumes") and own.get("volumes")), (name, role)
            mounts = [c.get("volumeMounts") for c in (shared["containers"][0], own["containers"][0])]
            assert not all(mounts), (name, role)
        for where, pod in layered_pods(deployment):
            container = pod["containers"][0]
            volumes = {v["name"] for v in pod["volumes"]}
            assert {m["name"] for m in container.get("volumeMounts", [])} == volumes, (name, where)
            if name != "defaults":
                assert {"kafka-ca", "kafka-client-certificate", "database-ca"} <= volumes, (name, where)


def spill_case(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    statefulset = find(docs, "StatefulSet", "-ingestor")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    return statefulset, effective_env(docs, container), container


def quantity_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[unit]


@pytest.mark.parametrize("case", ["ingestor:default-values.yaml", "ingestor:production-values.yaml",
                                  "tickpipe:production"])  # fmt: skip
def test_spill_volume_is_a_claim_per_pod_at_ingest_spill_dir_sized_from_values(
    renderings: dict[str, list[dict[str, Any]]], production: list[dict[str, Any]], case: str
) -> None:
    docs = production if case == "tickpipe:production" else renderings[case]
    statefulset, env, container = spill_case(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["spill"] == env["INGEST_SPILL_DIR"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # the spill is the volume, nothing else
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spill" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    size = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
    # The budget leaves room for the file system (ext4 keeps 5% for root; the ingestor is not root).
    assert int(env["INGEST_SPILL_MAX_BYTES"]) == size * 90 // 100
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert "spill" not in {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}


def test_spill_on_empty_dir_or_off(charts_copy: Path) -> None:
    docs = render(charts_copy, "ingestor", **{"spill.volumeType": "emptyDir", "spill.size": "512Mi",
                                              "spill.budgetPercent": "50"})  # fmt: skip
    statefulset, env, container = spill_case(docs)
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spill"]["emptyDir"] == {"sizeLimit": "512Mi"}
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["spill"] == env["INGEST_SPILL_DIR"]
    assert env["INGEST_SPILL_MAX_BYTES"] == str(256 << 20)
    statefulset, env, container = spill_case(render(charts_copy, "ingestor", **{"spill.enabled": "false"}))
    assert env["INGEST_SPILL_MAX_BYTES"] == "0" and "INGEST_SPILL_DIR" not in env
    assert "spill" not in {m["name"] for m in container["volumeMounts"]}
    assert "volumeClaimTemplates" not in statefulset["spec"]


def test_ingestor_is_one_pod_at_a_time(renderings: dict[str, list[dict[str, Any]]]) -> None:
    """A StatefulSet replaces its pod (never two WebSocket sessions side by side) and gives each its own claim."""
    statefulset = find(renderings["ingestor:default-values.yaml"], "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["podManagementPolicy"] == "OrderedReady"
    assert statefulset["spec"]["serviceName"] == find(renderings["ingestor:default-values.yaml"], "Service")[
        "metadata"]["name"]  # fmt: skip


def test_ingestor_replicas_elect_a_leader_with_only_their_lease_and_spread_over_nodes(charts_copy: Path) -> None:
    """More than one replica: a Lease leader (Role limited to the Lease, token mounted), a PodDisruptionBudget and
    preferred anti-affinity; without leaderElection the chart refuses, since every replica would produce."""
    assert "needs leaderElection.enabled" in render_error(charts_copy, "ingestor", replicaCount="2")
    docs = render(charts_copy, "ingestor", replicaCount="3", **{"leaderElection.enabled": "true"})
    statefulset, pod = find(docs, "StatefulSet"), find(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert statefulset["spec"]["replicas"] == 3 and pod["automountServiceAccountToken"] is True
    env = find(docs, "ConfigMap", "-env")["data"]
    assert env["INGEST_LEADER_ELECTION"] == "kubernetes" and env["INGEST_LEASE_NAME"] == "demo-ingestor"
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in pod["containers"][0]["env"]}
    assert fields == {"INGEST_IDENTITY": "metadata.name", "INGEST_LEASE_NAMESPACE": "metadata.namespace"}
    rules = find(docs, "Role")["rules"]
    assert {verb for rule in rules for verb in rule["verbs"]} == {"get", "update", "create"}
    assert all(rule["resources"] == ["leases"] for rule in rules)
    assert find(docs, "RoleBinding")["subjects"][0]["name"] == pod["serviceAccountName"]
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    egress_ports = {p["port"] for rule in find(docs, "NetworkPolicy")["spec"]["egress"] for p in rule["ports"]}
    assert 6443 in egress_ports
    single = render(charts_copy, "ingestor")
    kinds = {doc["kind"] for doc in single}
    assert not kinds & {"Role", "RoleBinding", "PodDisruptionBudget"}
    assert find(single, "StatefulSet")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


FILE_SETTINGS = ("KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION",
                 "DATABASE_SSL_ROOT_CERT", "INGEST_SPILL_DIR")  # fmt: skip


def test_every_file_a_setting_names_is_mounted_in_that_container(
    renderings: dict[str, list[dict[str, Any]]], production: list[dict[str, Any]]
) -> None:
    """A path in KAFKA_SSL_*_LOCATION, DATABASE_SSL_ROOT_CERT or INGEST_SPILL_DIR is on a volume of the pod that
    reads it (the settings refuse a missing certificate at start-up; the root file systems are read-only)."""
    checked = set()
    for case, docs in {**renderings, "tickpipe:production": production}.items():
        for doc in docs:
            for where, template in layered_pods(doc):
                claims = {t["metadata"]["name"] for t in doc.get("spec", {}).get("volumeClaimTemplates", [])}
                pod = {**template, "volumes": template.get("volumes", []) + [{"name": n, "claim": {}} for n in claims]}
                for container in pod["containers"]:
                    env = effective_env(docs, container)
                    for name in FILE_SETTINGS:
                        if isinstance(env.get(name), str):
                            checked.add(name)
                            mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])]
                            assert any(env[name] == m or env[name].startswith(m + "/") for m in mounts), (
                                case, where, name, env[name])  # fmt: skip
                            if name != "INGEST_SPILL_DIR":
                                mounted_file(pod, container, env[name])
    assert checked >= {"KAFKA_SSL_CA_LOCATION", "DATABASE_SSL_ROOT_CERT", "INGEST_SPILL_DIR"}


def test_migrator_trusts_the_database_ca_it_mounts(renderings: dict[str, list[dict[str, Any]]]) -> None:
    docs = renderings["migrator:external-database-values.yaml"]
    for doc in docs:
        for where, pod in pod_specs(doc):
            container = pod["containers"][0]
            env = effective_env(docs, container)
            assert "sslmode=verify-full" in env["DATABASE_URL"], where
            assert mounted_file(pod, container, env["DATABASE_SSL_ROOT_CERT"]) == (
                "configMap",
                "prices-db-ca",
                "root.crt",
            )


def test_every_enabled_source_is_an_ingestor_of_its_own(renderings: dict[str, list[dict[str, Any]]]) -> None:
    """Issue 15: one ingestor per enabled source, each with its own name, Lease and settings, into the same topic."""
    docs = renderings["tickpipe:sources-values.yaml"]
    ingestors = {}
    for doc in docs:
        if doc["kind"] == "StatefulSet" and "ingestor" in doc["metadata"]["name"]:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            env = effective_env(docs, container)
            ingestors[env["SOURCE"]] = (doc["metadata"]["name"], env)
    assert set(ingestors) == {"binance", "coingecko", "yahoo"}
    assert len({name for name, _ in ingestors.values()}) == 3
    assert {env["KAFKA_TOPIC"] for _, env in ingestors.values()} == {"price-ticks"}
    assert ingestors["coingecko"][1]["SYMBOLS"] == "bitcoin/usd,ethereum/usd,binancecoin/usd,solana/usd,ripple/usd"
    assert ingestors["yahoo"][1]["INGEST_KLINES"] == "false"  # candles and their repair are Binance's
    for source, (_, env) in ingestors.items():
        assert "COINGECKO_API_KEY" not in env or source == "coingecko"
    default = [d for d in renderings["tickpipe:default-values.yaml"] if d["kind"] == "StatefulSet"]
    assert [d["metadata"]["name"] for d in default if "ingestor" in d["metadata"]["name"]] == ["demo-ingestor"]
