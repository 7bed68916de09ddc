"""Validate docker-compose.yml and skaffold.yaml against their JSON schemas, offline (run by scripts/validate.sh).

compose: variables are substituted first, as `docker compose` does (`${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?message}`, `$$`), from the environment and the `.env` file. A required variable (`:?`, the passwords, which
are never in the repository) gets a placeholder; any other unset variable without a default is an error, so that
the file never depends on a variable nobody sets.
skaffold: the file's apiVersion must be the pinned schema's (SKAFFOLD_SCHEMA); each document is validated.
pod-templates: the FlinkDeployment CRD leaves its pod templates open (any fields), so they are written out as Pods
for kubeconform to check against the Kubernetes schema (a misspelt field there would be silently ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema.validators import validator_for

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]+)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.DOTALL)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def substitute(text: str, env: dict[str, str], errors: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:  # noqa: PLR0911 (one return per form of ${...}, as compose reads it)
        if match.group(0) == "$$":
            return "$"
        expression = match.group("braced") or match.group("plain")
        parsed = _BRACED.match(expression)
        if not parsed:
            errors.append(f"invalid interpolation: {match.group(0)}")
            return ""
        name, op, arg = parsed.group("name"), parsed.group("op"), parsed.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            use_default = value is None or (op == ":-" and value == "")
            return substitute(arg, env, errors) if use_default else str(value)
        if op in (":?", "?"):
            # Required at `docker compose up` (passwords: never in the repository); the structure is what is checked.
            return value if value else f"placeholder-for-{name}"
        if op in (":+", "+"):
            return substitute(arg, env, errors) if value else ""
        if value is None:
            errors.append(f"variable {name} is not set (in the environment or the .env file) and has no default")
            return ""
        return value

    return _VARIABLE.sub(replace, text)


def schema_errors(document: Any, schema: dict[str, Any], where: str) -> list[str]:
    # The compose-spec schema is draft 2020-12, skaffold's draft-07: each says which in its $schema.
    validator = validator_for(schema)(schema)
    return [
        f"{where}: {'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def check_compose(path: Path, schema: dict[str, Any], env_file: Path) -> list[str]:
    errors: list[str] = []
    env = {**read_env_file(env_file), **os.environ}
    text = substitute(path.read_text(), env, errors)
    document = yaml.safe_load(text)
    return errors + schema_errors(document, schema, path.name)


def check_skaffold(path: Path, schema: dict[str, Any], api_version: str) -> list[str]:
    errors: list[str] = []
    for index, document in enumerate(yaml.safe_load_all(path.read_text())):
        if document is None:
            continue
        where = f"{path.name} document {index + 1}"
        if document.get("apiVersion") != api_version:
            errors.append(f"{where}: apiVersion is {document.get('apiVersion')!r}, the pinned schema is {api_version}")
            continue
        errors += schema_errors(document, schema, where)
    return errors


def pod_templates(rendered: list[Path], out: Path) -> int:
    pods = []
    for path in rendered:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "FlinkDeployment":
                continue
            spec = doc["spec"]
            templates = {"": spec.get("podTemplate")}
            templates |= {f"-{role}": spec.get(role, {}).get("podTemplate") for role in ("jobManager", "taskManager")}
            for suffix, template in templates.items():
                if template:
                    name = f"{path.stem}-{doc['metadata']['name']}{suffix}".lower()
                    pods.append({"apiVersion": "v1", "kind": "Pod", **template, "metadata": {"name": name}})
    out.write_text(yaml.safe_dump_all(pods))
    return len(pods)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["compose", "skaffold", "pod-templates"])
    parser.add_argument("file", type=Path, nargs="+")
    parser.add_argument("--schema", type=Path)
    parser.add_argument("--out", type=Path, help="pod-templates: where to write the Pods")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    parser.add_argument("--api-version", default="")
    args = parser.parse_args()
    if args.kind == "pod-templates":
        print(f"{pod_templates(args.file, args.out)} pod templates of FlinkDeployments")  # noqa: T201
        return
    schema = json.loads(args.schema.read_text())
    file: Path = args.file[0]
    if args.kind == "compose":
        errors = check_compose(file, schema, args.env_file)
    else:
        errors = check_skaffold(file, schema, args.api_version)
    for error in errors:
        print(error)  # noqa: T201
    if errors:
        sys.exit(1)
    print(f"{file}: valid")  # noqa: T201


if __name__ == "__main__":
    main()
