"""`tickpipe k8s status [--namespace NS] [--context CTX] [--kubeconfig FILE]`."""

from __future__ import annotations

import argparse

from tickpipe.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="k8s_command", required=True, metavar="COMMAND")
    status = sub.add_parser(
        "status",
        help="job state and last checkpoint, Kafka and topics, pods, Grafana URL; exit 0 only when all is healthy",
        description="Health of tickpipe in one namespace: the MA job's FlinkDeployment (job state, last "
        "checkpoint), the Strimzi Kafka cluster and its topics, every pod, and the Grafana Ingress URL. "
        "Exit code 0 when healthy, 1 otherwise (or when no cluster is reachable).",
    )
    status.add_argument("-n", "--namespace", default="tickpipe", help="namespace of the release (default tickpipe)")
    status.add_argument("--context", help="kubeconfig context (default: the current one)")
    status.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds per API request (default 10)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tickpipe.k8s.status import collect, connect, render

    api = connect(args.kubeconfig, args.context, timeout=args.timeout)
    report = collect(api, args.namespace)
    print(render(report))
    return 0 if report.healthy else 1
