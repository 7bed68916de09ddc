"""Reading the repository's deployment files for the deploy tests: Dockerfiles, docker-compose.yml, .env, versions."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

STAGES = sorted(path.parent.name for path in (REPO / "services").glob("*/Dockerfile"))
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


@dataclass
class Dockerfile:
    stage: str
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined, comments dropped

    @classmethod
    def of(cls, stage: str) -> Dockerfile:
        path = REPO / "services" / stage / "Dockerfile"
        instructions: list[tuple[str, str]] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            pending += line.removesuffix("\\").strip() + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                keyword, _, rest = pending.partition(" ")
                instructions.append((keyword.upper(), rest.strip()))
                pending = ""
        return cls(stage, path, instructions)

    def global_args(self) -> dict[str, str]:
        """ARG defaults declared before the first FROM (the build's pinned versions)."""
        args: dict[str, str] = {}
        for keyword, rest in self.instructions:
            if keyword == "FROM":
                break
            if keyword == "ARG" and "=" in rest:
                name, value = rest.split("=", 1)
                args[name] = value.strip('"')
        return args

    def stages(self) -> dict[str, list[tuple[str, str]]]:
        """Build stages by name (`FROM ... AS name`), each with its instructions after the FROM line."""
        out: dict[str, list[tuple[str, str]]] = {}
        current: list[tuple[str, str]] | None = None
        for keyword, rest in self.instructions:
            if keyword == "FROM":
                name = rest.split()[-1] if " AS " in rest.upper() else rest
                current = out.setdefault(name, [])
                current.append(("FROM", rest))
            elif current is not None:
                current.append((keyword, rest))
        return out

    def base_images(self) -> list[str]:
        """Every FROM image with the global ARG defaults substituted (stage names excluded)."""
        args, stage_names = self.global_args(), set(self.stages())
        images = []
        for keyword, rest in self.instructions:
            if keyword == "FROM":
                image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
                if image not in stage_names:
                    images.append(image)
        return images

    def last(self, keyword: str) -> str | None:
        found = [rest for kw, rest in self.instructions if kw == keyword]
        return found[-1] if found else None

    def exec_form(self, keyword: str) -> list[str]:
        value = self.last(keyword)
        if value is None:
            return []
        parsed = json.loads(value) if value.startswith("[") else shlex.split(value)
        return [str(part) for part in parsed]

    def env(self) -> dict[str, str]:
        """ENV of the final stage (KEY=VALUE pairs)."""
        final = list(self.stages().values())[-1]
        out: dict[str, str] = {}
        for keyword, rest in final:
            if keyword == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    out[key] = value
        return out

    def user(self) -> str | None:
        return self.last("USER")
