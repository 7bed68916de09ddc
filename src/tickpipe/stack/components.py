"""The engines of the local stack. Each one knows how to prepare its state, its command line and its readiness."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from tickpipe.db import wait_for_database
from tickpipe.errors import DatabaseNotReady, KafkaNotReady, StackError
from tickpipe.kafka import wait_for_broker
from tickpipe.stack.process import RunAs, tail, wait_until
from tickpipe.stack.sizing import LARGE, EngineSizes
from tickpipe.stack.tls import (
    BROKER_USER,
    CLIENT_USER,
    broker_settings,
    local_certificates,
    scram_format_args,
    scram_passwords,
)


class Component(ABC):
    """One engine process. `ports` maps role → port; `home` is this component's folder under the state dir."""

    name: str
    port_roles: tuple[str, ...]
    fixed_ports: ClassVar[dict[str, int]]
    run_as: RunAs | None = None

    def __init__(self, home: Path, log_dir: Path, ports: dict[str, int], *, sizes: EngineSizes | None = None) -> None:
        self.home, self.log_dir, self.ports = home, log_dir, ports
        self.sizes = sizes or EngineSizes.named(LARGE)  # memory limits (tickpipe.stack.sizing)

    @property
    def log_path(self) -> Path:
        """The log of the process whose readiness decides this component's."""
        return self.log_dir / f"{next(iter(self.commands()))}.log"

    @abstractmethod
    def prepare(self) -> None:
        """Create configuration and initialise data on first use; idempotent."""

    @abstractmethod
    def commands(self) -> dict[str, list[str]]:
        """Process name → command line; every process logs to `<log_dir>/<name>.log`."""

    def process_env(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    def check_ready(self) -> None:
        """One readiness probe: raise on failure (the caller retries until its deadline)."""

    @abstractmethod
    def exports(self) -> dict[str, str]:
        """Environment variables that point the stages at this engine."""

    def describe(self) -> str:
        return ", ".join(f"{role} 127.0.0.1:{port}" for role, port in self.ports.items())

    def not_ready(self, what: str) -> StackError:
        return StackError(f"{self.name}: {what}; see its log {self.log_path}:\n{tail(self.log_path)}")


def java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    found = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not found:
        raise StackError("java not found: install a JDK 17 (make setup does) or set JAVA_HOME")
    return found


class KafkaBroker(Component):
    """Kafka 4 in KRaft combined mode (each node broker + controller; no ZooKeeper): one node, or `nodes` of them
    (STACK_KAFKA_NODES=3) with replication factor 3 and min.insync.replicas 2, so that losing one loses nothing."""

    name = "kafka"
    port_roles: tuple[str, ...] = ("broker", "controller")
    # --fixed-ports: node 1 on 9092/9093, the next ones on 9094/9095, 9096/9097, ...
    fixed_ports: ClassVar[dict[str, int]] = {
        "broker": 9092,
        "controller": 9093,
        **{f"{role}-{i}": 9090 + 2 * i + k for i in range(2, 6) for k, role in enumerate(("broker", "controller"))},
    }

    def __init__(
        self,
        home: Path,
        log_dir: Path,
        ports: dict[str, int],
        jars: Path,
        *,
        tls: bool = False,
        sizes: EngineSizes | None = None,
        nodes: int = 1,
    ) -> None:
        super().__init__(home, log_dir, ports, sizes=sizes)
        self.jars, self.tls, self.nodes = jars, tls, nodes
        if nodes > 1 and tls:
            raise StackError("kafka: the TLS stack runs one node (STACK_KAFKA_NODES=1)")
        extra = range(2, nodes + 1)
        self.port_roles = ("broker", "controller", *(f"{role}-{i}" for i in extra for role in ("broker", "controller")))

    def _role(self, role: str, node: int) -> str:
        return role if node == 1 else f"{role}-{node}"

    def _node_home(self, node: int) -> Path:
        return self.home if node == 1 else self.home / f"node-{node}"

    def _process(self, node: int) -> str:
        return self._role("kafka", node)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[self._role('broker', n)]}" for n in range(1, self.nodes + 1))

    def prepare(self) -> None:
        if not any(self.jars.glob("kafka_2.13-*.jar")):
            raise StackError(f"kafka: broker jars missing in {self.jars}; run `make setup`")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        for node in range(1, self.nodes + 1):
            self._prepare_node(node, cluster_id)

    def _prepare_node(self, node: int, cluster_id: str) -> None:
        home = self._node_home(node)
        data = home / "data"
        data.mkdir(parents=True, exist_ok=True)
        broker, controller = self.ports[self._role("broker", node)], self.ports[self._role("controller", node)]
        voters = ",".join(f"{n}@127.0.0.1:{self.ports[self._role('controller', n)]}" for n in range(1, self.nodes + 1))
        # Replicas: one per node up to 3; with 3, a write needs 2 (acks=all), so one node can be lost.
        replicas, min_isr = str(min(self.nodes, 3)), "2" if self.nodes >= 3 else "1"
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created on purpose (tickpipe.kafka.ensure_topics), never by a typo.
            "auto.create.topics.enable": "false",
            "num.partitions": "6",
            **self.sizes.kafka_settings(),
        }
        if self.tls:  # SASL_SSL for clients, mutual TLS for the controller (tickpipe.stack.tls)
            certs = local_certificates(self.home.parent / "tls")
            settings.update(broker_settings(broker, controller, certs, self._scram()[BROKER_USER]))
        # Holds the broker's SCRAM password in TLS mode: readable by the owner only.
        (home / "server.properties").touch(mode=0o600)
        (home / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        (self.home / "log4j2.properties").write_text(
            "rootLogger.level = INFO\nrootLogger.appenderRef.stdout.ref = STDOUT\n"
            "appender.stdout.type = Console\nappender.stdout.name = STDOUT\n"
            "appender.stdout.layout.type = PatternLayout\nappender.stdout.layout.pattern = [%d] %p %m (%c)%n\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.org.name = org.apache.kafka\nlogger.org.level = WARN\n"
            "logger.started.name = kafka.server.BrokerServer\nlogger.started.level = INFO\n"
        )
        scram_marker = data / ".scram-users"
        if not (data / "meta.properties").exists():
            self._run_java(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",  # "=": an id may start with "-"
                "-c",
                str(home / "server.properties"),
                *(scram_format_args(self._scram()) if self.tls else []),
            )
            if self.tls:
                scram_marker.touch()
        elif self.tls and not scram_marker.exists():
            raise StackError(
                f"kafka: {data} was formatted without SCRAM users, so a TLS + SCRAM broker cannot start on it; "
                "`make clean` (or another TICKPIPE_HOME) and start again"
            )

    def _scram(self) -> dict[str, str]:
        return scram_passwords(self.home / "scram.json")

    def client_security(self) -> dict[str, str]:
        """librdkafka settings for the stages' SCRAM user (empty without TLS). Holds a password: never log it."""
        if not self.tls:
            return {}
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": CLIENT_USER,
            "sasl.password": self._scram()[CLIENT_USER],
            "ssl.ca.location": str(self.home.parent / "tls" / "ca.pem"),
        }

    def _run_java(self, main: str, *args: str) -> None:
        result = subprocess.run(
            [java(), "-cp", f"{self.jars}/*", main, *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(f"kafka: {main} {args[0]} failed: {result.stderr.strip()[-500:]}")

    def commands(self) -> dict[str, list[str]]:
        return {
            self._process(node): [
                java(),
                *self.sizes.kafka_jvm_options(),
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp",
                f"{self.jars}/*",
                "kafka.Kafka",
                str(self._node_home(node) / "server.properties"),
            ]
            for node in range(1, self.nodes + 1)
        }

    def process_env(self) -> dict[str, str]:
        return {**os.environ, **self.sizes.jvm_env()}

    def check_ready(self) -> None:
        try:
            brokers = wait_for_broker(self.bootstrap, timeout=2.0, **self.client_security())
        except KafkaNotReady as error:
            raise self.not_ready(str(error)) from None
        if brokers < self.nodes:
            raise self.not_ready(f"{brokers} of {self.nodes} brokers registered")

    def exports(self) -> dict[str, str]:
        exports = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        if self.tls:
            security = self.client_security()
            exports.update(
                KAFKA_SECURITY_PROTOCOL=security["security.protocol"],
                KAFKA_SASL_MECHANISM=security["sasl.mechanism"],
                KAFKA_SASL_USERNAME=security["sasl.username"],
                KAFKA_SASL_PASSWORD=security["sasl.password"],
                KAFKA_SSL_CA_LOCATION=security["ssl.ca.location"],
            )
        return exports


def _postgres_bin() -> Path:
    override = os.environ.get("TICKPIPE_PG_BIN")
    candidates = (
        [Path(override)]
        if override
        else sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    )
    for candidate in candidates:
        if (candidate / "postgres").exists():
            return candidate
    raise StackError("postgres: server binaries not found (apt package postgresql); run `make setup`")


class Postgres(Component):
    """A private PostgreSQL cluster: its own data dir and port, run as an unprivileged user when we are root."""

    name = "postgres"
    port_roles = ("sql",)
    fixed_ports: ClassVar[dict[str, int]] = {"sql": 5432}
    owner = "tickpipe"
    database = "tickpipe"

    def __init__(
        self, home: Path, log_dir: Path, ports: dict[str, int], *, tls: bool = False, sizes: EngineSizes | None = None
    ) -> None:
        super().__init__(home, log_dir, ports, sizes=sizes)
        self.run_as = _unprivileged_account() if os.geteuid() == 0 else None
        self.secrets_file = home / "secrets.json"
        self.tls = tls

    def _secrets(self) -> dict[str, str]:
        """Passwords generated on first start and kept (mode 0600) in the state dir: never in the repo."""
        if not self.secrets_file.exists():
            generated = {role: secrets.token_urlsafe(18) for role in ("owner", "writer", "reader")}
            self.secrets_file.touch(mode=0o600)
            self.secrets_file.write_text(json.dumps(generated))
        data: dict[str, str] = json.loads(self.secrets_file.read_text())
        return data

    @property
    def server_dir(self) -> Path:
        """Where the server's data and socket dirs live: this component's folder, or the one `prepare` recorded
        when the server's user cannot reach it (see `_outside_dir`)."""
        try:
            return Path(self.server_dir_file.read_text().strip())
        except FileNotFoundError:
            return self.home

    @property
    def server_dir_file(self) -> Path:
        return self.home / "server-dir"

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        fresh = not self.secrets_file.exists()
        password = self._secrets()["owner"]
        if self.run_as and not _can_traverse(self.home, self.run_as):
            # Root in a folder others cannot enter (a clone in a mode-700 home): the server's data and socket go to
            # a folder of its own user instead, recorded in the state dir, so `make run` just works.
            outside = _outside_dir(self.home, self.run_as)
            if fresh and outside.exists():
                shutil.rmtree(outside / "data", ignore_errors=True)  # left by an earlier, since removed state dir
            self.server_dir_file.write_text(f"{outside}\n")
            link = self.home / "data"
            if not link.exists() and not link.is_symlink():
                link.symlink_to(outside / "data")  # so the data is found where the README says it is
        else:
            self.server_dir_file.unlink(missing_ok=True)
        data, run = self.server_dir / "data", self.server_dir / "run"
        run.mkdir(exist_ok=True)
        if self.run_as:
            os.chown(run, self.run_as.uid, self.run_as.gid)
        if (data / "PG_VERSION").exists():
            self._prepare_tls(data)
            return
        data.mkdir(exist_ok=True)
        pwfile = self.server_dir / "initdb.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password)
        if self.run_as:
            for path in (data, pwfile):
                os.chown(path, self.run_as.uid, self.run_as.gid)
        result = subprocess.run(
            [
                str(_postgres_bin() / "initdb"),
                "-D",
                str(data),
                "-U",
                self.owner,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=self.run_as.uid if self.run_as else None,
            group=self.run_as.gid if self.run_as else None,
        )
        pwfile.unlink()
        if result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise StackError(f"postgres: initdb failed: {result.stderr.strip()[-500:]}")
        self._prepare_tls(data)

    def _prepare_tls(self, data: Path) -> None:
        """TLS mode: the server certificate in the data dir (PostgreSQL's default server.crt/server.key, owned by
        the server's user, mode 0600 as it demands) and an hba file that accepts TCP clients over TLS only."""
        if not self.tls:
            return
        certs = local_certificates(self.home.parent / "tls")
        for source, name in ((certs.server.cert, "server.crt"), (certs.server.key, "server.key")):
            target = data / name
            target.unlink(missing_ok=True)
            target.touch(mode=0o600)
            target.write_bytes(source.read_bytes())
            if self.run_as:
                os.chown(target, self.run_as.uid, self.run_as.gid)
        hba = data / "pg_hba_tls.conf"
        hba.write_text(
            "local all all peer\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n"
        )
        if self.run_as:
            os.chown(hba, self.run_as.uid, self.run_as.gid)

    def commands(self) -> dict[str, list[str]]:
        return {
            "postgres": [
                str(_postgres_bin() / "postgres"),
                "-D",
                str(self.server_dir / "data"),
                "-p",
                str(self.ports["sql"]),
                "-k",
                str(self.server_dir / "run"),
                # Names the state dir on the command line even when the data lives elsewhere: that is how the
                # stack recognises its own server (a recycled pid never does).
                "-c",
                f"tickpipe.state_dir={self.home.parent}",
                "-c",
                "listen_addresses=127.0.0.1",
                *self.sizes.postgres_options(),
                "-c",
                "logging_collector=off",
                *(
                    ["-c", "ssl=on", "-c", f"hba_file={self.server_dir / 'data' / 'pg_hba_tls.conf'}"]
                    if self.tls
                    else []
                ),
            ]
        }

    def conninfo(self, dbname: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.ports['sql']} dbname={dbname} user={self.owner} "
            f"password={self._secrets()['owner']}"
        )

    def check_ready(self) -> None:
        try:
            wait_for_database(self.conninfo(), timeout=2.0, where=f"at 127.0.0.1:{self.ports['sql']}")
        except DatabaseNotReady as error:
            raise self.not_ready(str(error)) from None
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}" OWNER "{self.owner}"')

    def exports(self) -> dict[str, str]:
        passwords = self._secrets()
        # TLS mode: verify the server against the stack's CA, host name included (127.0.0.1 is in the certificate).
        tls = f"?sslmode=verify-full&sslrootcert={self.home.parent / 'tls' / 'ca.pem'}" if self.tls else ""
        return {
            "DATABASE_URL": f"postgresql://{self.owner}@127.0.0.1:{self.ports['sql']}/{self.database}{tls}",
            "DATABASE_PASSWORD": passwords["owner"],
            "DATABASE_WRITER_PASSWORD": passwords["writer"],
            "DATABASE_READER_PASSWORD": passwords["reader"],
        }


def _can_traverse(path: Path, account: RunAs) -> bool:
    """Can `account` (not root) walk down to `path`? Every folder above it must let that user through."""
    for folder in path.parents:
        info = folder.stat()
        if info.st_uid == account.uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == account.gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return False
    return True


def _outside_dir(home: Path, account: RunAs) -> Path:
    """A folder of the server's user for one state dir: `/var/tmp/tickpipe-postgres-<hash of the state dir>`
    (/var/tmp survives reboots, as the data must). Created 0700 for that user; an existing one is used only if it
    is a real folder of that user that nobody else can write (/var/tmp is shared)."""
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    folder = Path("/var/tmp") / f"tickpipe-postgres-{digest}"  # noqa: S108 - created 0700, ownership checked below
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
        os.chown(folder, account.uid, account.gid)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != account.uid or info.st_mode & 0o022:
        raise StackError(
            f"postgres: {folder} exists but is not a private folder of uid {account.uid}; remove it, "
            "or put TICKPIPE_HOME under a folder that uid can traverse"
        )
    return folder


def _unprivileged_account() -> RunAs:
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(entry.pw_uid, entry.pw_gid)
    raise StackError("postgres: running as root and no unprivileged user (postgres) exists to run the server")


def flink_home() -> Path:
    """The Flink distribution inside the PyFlink package: the same Flink the job is written against."""
    import pyflink

    return Path(pyflink.__file__).parent


def _java17_module_flags() -> str:
    """The --add-opens/--add-exports flags the Flink distribution's own config.yaml sets for Java 17."""
    text = (flink_home() / "conf" / "config.yaml").read_text()
    found = re.search(r"^\s+all: (--add-.*)$", text, re.MULTILINE)
    return found.group(1) if found else ""


JDBC_DRIVER_JAR, JDBC_DRIVER_PACKAGE = "postgresql", "org.postgresql."
PYFLINK_LOCAL_EXECUTION_VARIABLES = frozenset({"PYTHON_LOOPBACK_SERVER_ADDRESS", "_python_worker_execution_mode"})


class FlinkCluster(Component):
    """A Flink session cluster from the PyFlink distribution: one JobManager and one TaskManager with 4 slots, or
    `taskmanagers` TaskManagers with 2 slots each (a job spread over processes, one of which can be lost)."""

    name = "flink"
    port_roles = ("rest", "rpc", "metrics")
    fixed_ports: ClassVar[dict[str, int]] = {"rest": 8081, "rpc": 6123, "metrics": 9249}

    def __init__(
        self,
        home: Path,
        log_dir: Path,
        ports: dict[str, int],
        *,
        sizes: EngineSizes | None = None,
        taskmanagers: int = 1,
        connector_jars: Path | None = None,
    ) -> None:
        super().__init__(home, log_dir, ports, sizes=sizes)
        self.taskmanagers = taskmanagers
        self.connector_jars = connector_jars
        self.taskmanager_slots = 4 if taskmanagers == 1 else 2

    @property
    def taskmanager_processes(self) -> list[str]:
        """The TaskManagers' process names: `flink-taskmanager`, then `flink-taskmanager-2`, ..."""
        return ["flink-taskmanager", *(f"flink-taskmanager-{i}" for i in range(2, self.taskmanagers + 1))]

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['rest']}"

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    def prepare(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        # The distribution's lib/ plus flink-python from opt/ (as the official PyFlink images do): the cluster
        # runs Python operators, so it needs their runtime classes.
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        self.lib_dir.mkdir()
        for jar in [*(flink_home() / "lib").glob("*.jar"), *(flink_home() / "opt").glob("flink-python-*.jar")]:
            (self.lib_dir / jar.name).symlink_to(jar)
        # The PostgreSQL driver registers itself with java.sql.DriverManager, a JVM-wide registry: loaded from a
        # job's own jars, it keeps that job's class loader (~10 MB of metaspace) alive after the job ends, and a
        # session cluster that runs jobs one after another (tests, restarts of `tickpipe run`) dies of
        # "OutOfMemoryError: Metaspace" after a dozen or two. From lib/, parent-first, it is loaded once.
        for jar in (self.connector_jars or Path("/nonexistent")).glob(f"{JDBC_DRIVER_JAR}-*.jar"):
            (self.lib_dir / jar.name).symlink_to(jar.resolve())
        for name in ("log4j-console.properties", "log4j.properties", "logback-console.xml"):
            source = flink_home() / "conf" / name
            if source.exists():
                shutil.copy(source, self.conf_dir / name)
        checkpoints = self.home / "checkpoints"
        checkpoints.mkdir(exist_ok=True)
        # Flink 1.20 reads config.yaml; flat dotted keys are valid YAML there.
        config = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.port": self.ports["rpc"],
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.ports["rest"],
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": self.taskmanager_slots,
            **self.sizes.flink_settings(),
            "parallelism.default": 1,
            "classloader.parent-first-patterns.additional": JDBC_DRIVER_PACKAGE,
            "state.checkpoints.dir": f"file://{checkpoints}",
            "state.savepoints.dir": f"file://{self.home / 'savepoints'}",
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            # JobManager and each TaskManager take one port of this range (the first free one).
            "metrics.reporter.prom.port": f"{self.ports['metrics']}-{self.ports['metrics'] + self.taskmanagers}",
            # Python UDF workers run in the same virtualenv as the CLI that started the stack.
            "python.executable": sys.executable,
            # UTC everywhere: the JDBC driver binds TIMESTAMP values in the JVM zone, and event times are UTC.
            # Plus the distribution's Java 17 module flags, which this key would otherwise replace.
            "env.java.opts.all": " ".join(
                filter(None, (_java17_module_flags(), self.sizes.flink_jvm_options(), "-Duser.timezone=UTC"))
            ),
        }
        (self.conf_dir / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))

    def process_env(self) -> dict[str, str]:
        # Not inherited: PyFlink's local execution leaves its loopback worker pool's address in the environment of the
        # process that ran a job in-process, and a TaskManager that inherits it sends its Python functions there
        # instead of running them in Python workers of its own.
        env = {key: value for key, value in os.environ.items() if key not in PYFLINK_LOCAL_EXECUTION_VARIABLES}
        env.update(
            FLINK_HOME=str(flink_home()),
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LIB_DIR=str(self.lib_dir),
            FLINK_LOG_DIR=str(self.home / "log"),
            FLINK_PID_DIR=str(self.home),
            **self.sizes.jvm_env(),
        )
        env.setdefault("JAVA_HOME", str(Path(java()).resolve().parent.parent))
        return env

    def commands(self) -> dict[str, list[str]]:
        bin_dir = flink_home() / "bin"
        taskmanager = ["bash", str(bin_dir / "taskmanager.sh"), "start-foreground"]
        return {
            "flink-jobmanager": ["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"],
            **{process: taskmanager for process in self.taskmanager_processes},
        }

    def check_ready(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.rest_url}/overview", timeout=2) as response:  # noqa: S310 - our own loopback URL
                overview = json.load(response)
        except OSError as error:
            raise self.not_ready(f"REST API at {self.rest_url} not answering ({error})") from None
        registered = overview.get("taskmanagers", 0)
        if registered < self.taskmanagers:
            raise self.not_ready(f"{registered} of {self.taskmanagers} TaskManagers registered")

    def exports(self) -> dict[str, str]:
        return {"FLINK_REST_URL": self.rest_url, "FLINK_CONF_DIR": str(self.conf_dir)}


__all__ = ["Component", "FlinkCluster", "KafkaBroker", "Postgres", "flink_home", "java", "wait_until"]
