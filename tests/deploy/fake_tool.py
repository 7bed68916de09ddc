"""A stand-in for a command-line tool (kubectl, helm, skaffold, curl, tickpipe, docker) in the cluster scripts' tests.

It appends its command line to $FAKE_LOG and answers with the first rule of $FAKE_RULES (JSON) that matches:
[substring of the command line, stdout, exit code, file to create (or null), answer only once this file exists].
The last two let a test change the answers once an earlier command ran (e.g. a job that fails after an upgrade).
A command line no rule matches answers nothing, with exit code 0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(tool: str) -> int:
    line = " ".join([tool, *sys.argv[1:]])
    with Path(os.environ["FAKE_LOG"]).open("a") as log:
        log.write(line + "\n")
    for rule in json.loads(Path(os.environ["FAKE_RULES"]).read_text()):
        pattern, stdout, code = rule[:3]
        touch = rule[3] if len(rule) > 3 else None
        only_if = rule[4] if len(rule) > 4 else None
        if pattern in line and (only_if is None or Path(only_if).exists()):
            if touch:
                Path(touch).touch()
            sys.stdout.write(stdout if stdout.endswith("\n") or not stdout else stdout + "\n")
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[0]).name))
