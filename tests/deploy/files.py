"""Reading the repository's deployment files for the deploy tests: the Dockerfile's targets (through dockerfile-parse),
docker-compose.yml, skaffold.yaml, .env and the version files."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
# The images, each a target of the Dockerfile, a chart, a compose service and a skaffold artifact.
STAGES = ["ingestor", "ma-job", "migrator"]
IMAGE_PREFIX = "tickpipe-"


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (versions.env, .env); comments and blank lines skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def versions() -> dict[str, str]:
    return {**env_file(REPO / "versions.env"), **env_file(REPO / "k8s" / "versions.env")}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def skaffold() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "skaffold.yaml").read_text()))


@dataclass(frozen=True)
class Stage:
    """One build stage of the Dockerfile (`FROM <base> AS <name>`); `parent` is the stage it is built on, if any."""

    name: str
    base: str
    parent: Stage | None
    instructions: tuple[tuple[str, str], ...]  # (INSTRUCTION, arguments) after the FROM line

    def chain(self) -> list[Stage]:
        """This stage and the stages it is built on, the first ancestor first."""
        return [*(self.parent.chain() if self.parent else []), self]

    def last(self, keyword: str) -> str | None:
        """The value of the last `keyword` instruction in effect (Docker inherits it from the base stage)."""
        for stage in reversed(self.chain()):
            found = [value for kw, value in stage.instructions if kw == keyword]
            if found:
                return found[-1]
        return None

    def exec_form(self, keyword: str) -> list[str]:
        value = self.last(keyword)
        if value is None:
            return []
        parsed = json.loads(value) if value.startswith("[") else shlex.split(value)
        return [str(part) for part in parsed]

    def env(self) -> dict[str, str]:
        """ENV in effect in the stage (KEY=VALUE pairs, the base stages' first)."""
        out: dict[str, str] = {}
        for stage in self.chain():
            for keyword, value in stage.instructions:
                if keyword == "ENV":
                    for pair in shlex.split(value):
                        key, _, item = pair.partition("=")
                        out[key] = item
        return out

    def user(self) -> str | None:
        return self.last("USER")

    def copies(self) -> list[tuple[str | None, list[str]]]:
        """(the --from stage or None for the build context, source paths) of every COPY of this stage."""
        out: list[tuple[str | None, list[str]]] = []
        for keyword, value in self.instructions:
            if keyword == "COPY":
                words = shlex.split(value)
                options = {w.split("=", 1)[0]: w.split("=", 1)[-1] for w in words if w.startswith("--")}
                paths = [w for w in words if not w.startswith("--")]
                out.append((options.get("--from"), paths[:-1]))
        return out


@cache
def _parser() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (the build's pinned versions)."""
    args: dict[str, str] = {}
    for item in _parser().structure:
        if item["instruction"] == "FROM":
            break
        if item["instruction"] == "ARG" and "=" in item["value"]:
            name, value = item["value"].split("=", 1)
            args[name] = value.strip('"')
    return args


@cache
def stages() -> dict[str, Stage]:
    """The Dockerfile's build stages by name, in file order."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for item in _parser().structure:
        keyword, value = item["instruction"], item["value"]
        if keyword == "FROM":
            words = value.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {value}"
            current = []
            found[words[2]] = (words[0], current)
        elif current is not None and keyword != "COMMENT":
            current.append((keyword, value))
    built: dict[str, Stage] = {}
    for name, (base, instructions) in found.items():
        built[name] = Stage(name, base, built.get(base), tuple(instructions))
    return built


def target(name: str) -> Stage:
    assert name in stages(), f"the Dockerfile has no target {name}"
    return stages()[name]


def base_images() -> list[str]:
    """Every image a stage starts from (FROM with the global ARG defaults substituted), stage names excluded."""
    return [image for image in _parser().parent_images if image not in stages() and image != "scratch"]
