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
                    assert spec.get("automountServiceAccountToken") is False or doc["kind"] == "FlinkDeployment"
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
    kind = {"ma-job": "FlinkDeployment", "migrator": "Job", "ingestor": "Deployment"}[stage]
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
