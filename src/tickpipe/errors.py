"""Every error tickpipe reports to a user, in one place.

Each is an expected failure whose message is one line that says what failed and what to do: the `tickpipe` command
prints it without a traceback (exit 2 for configuration, 1 for the rest). A bug is anything else, and keeps its
traceback.
"""

from __future__ import annotations


class TickpipeError(Exception):
    """An expected failure with a one-line message for the user."""


class ConfigError(TickpipeError):
    """A configuration value is invalid; the message names the variable."""


class CommandError(TickpipeError):
    """A command cannot do what was asked (bad arguments, missing state)."""


class StackError(TickpipeError, RuntimeError):
    """A local engine or stage failed; the message names it, what failed and where its log is."""


class KafkaNotReady(TickpipeError, RuntimeError):
    """The Kafka broker did not answer within the deadline."""


class DatabaseNotReady(TickpipeError, RuntimeError):
    """PostgreSQL did not accept a connection within the deadline."""


class MigrationError(TickpipeError, RuntimeError):
    """A schema migration cannot be applied (changed after it was applied, failed, or locked)."""


class FlinkRestError(TickpipeError, RuntimeError):
    """The Flink REST API refused a request or the job reached a state it should not."""


class ClusterUnreachable(TickpipeError):
    """No usable Kubernetes cluster: no kubeconfig, or the API server does not answer."""


class AlertLevelError(TickpipeError, ValueError):
    """Bad input for a price alert level, or a missing row."""


class ChartError(TickpipeError, ValueError):
    """The chart cannot be drawn (no rows, bad time range)."""
