"""Fixed operator ids for the candle job's SQL operators, so its savepoints restore across changes of its graph.

Flink restores a savepoint's state by operator id, and refuses (allowNonRestoredState false, as the Helm chart runs
it) when an operator that had state is missing. Python operators get their id from `.uid(...)`; the operators the
SQL planner makes (Kafka source, table sinks, their constraint enforcers, Kafka sink writers and committers) have
none, and Flink derives their ids from the graph's shape: adding a source (the ticks, tick_candles.py) changed every
one of them. So, on the built stream graph, before it is submitted:

- each operator without a uid gets one named after what it is: its name without the planner's numbers
  (`op:Sink: candles_1m`, `op:Source: candles_raw`), and where that name is not the graph's only one, the sinks it
  feeds (`op:ConstraintEnforcer>Sink: candles_1m`): the same in later graphs, whatever source or sink is added;
- each of those that the job had before these uids (9fcadcd to 0f4485a: the job without the tick branch) also gets its
  id from then as the user-provided hash, which Flink tries first when it restores: savepoints taken before this
  change restore too.

Operators whose name and sinks are not unique in the graph (PyFlink's key-selector maps, the conversions after the
two Kafka sources) are left as they are: none of them holds state.
"""

from __future__ import annotations

import re
from typing import Any

# The ids the job's operators had before they had uids (StreamGraphHasherV2 on the graph of 9fcadcd's job, the same
# for every commit up to 0f4485a), by operator_keys().
PREVIOUS_IDS = {
    "op:*anonymous_datastream_source*>Sink: candles_1m": "57ae01e64da9ccf0fc4f912b9bbedbac",
    "op:*anonymous_datastream_source*>Sink: signals": "80f620b8af1ba154586e8a4a659b9c02",
    "op:*anonymous_datastream_source*>dead_letters: Committer": "c95f4e93593df680ff533ffb8ab60e9d",
    "op:*anonymous_datastream_source*>signal_events: Committer": "c23f001a5e3594657bc258c4c9d4ea49",
    "op:Calc>Sink: candles_1m": "4a2881622141174204362d7785149a1d",
    "op:Calc>Sink: signals": "28496fe90aaa911d05361d249d8cd08f",
    "op:ConstraintEnforcer>Sink: candles_1m": "db0b91e9e8ad4665e24ad81ed41398b8",
    "op:ConstraintEnforcer>Sink: signals": "cbf2358bea5672a257bfd3dd246c9b5e",
    "op:Map, parse candles": "c346c8f585320f5b5fb5f776b93db980",
    "op:Map>Sink: signals": "87b5086f2e1c246c62c4b711421b9105",
    "op:Map>dead_letters: Committer": "089fa4e450690a0c5928e9be740daa9d",
    "op:Map>signal_events: Committer": "84baae88ad96cc728c475f2e7ab38c61",
    "op:Sink: candles_1m": "0c06af09073e6a8af5720ea1ebd4371c",
    "op:Sink: signals": "179530922c75f10cb9435baf0185e5a9",
    "op:Source: candles_raw": "cbc357ccb763df2852fee8c4fc7d55f2",
    "op:TableToDataSteam": "570f707193e0fe32f4d86d067aba243b",
    "op:_stream_key_by_map_operator": "44039232de2467331753a93a257d38a2",
    "op:dead_letters: Committer": "784df7774bb0157eddc19a3dafa05546",
    "op:dead_letters: Writer": "74fc0bcf7d612eb0aef5fb3b449f7aae",
    "op:signal_events: Committer": "8188d292c9c4579eb05f9a5740ca6b58",
    "op:signal_events: Writer": "0d0c1760e6747c13661730b1bd7dad1b",
}


def _normalized(name: str) -> str:
    # The planner numbers its nodes (`Calc[4]`, `*anonymous_datastream_source$2*[3]`): the numbers move with them.
    name = re.sub(r"\$\d+|\[\d+\]", "", name)
    # The job wrote its tables with Flink's JDBC connector, an operator named `Sink: <table>`; our own sink (a sink
    # writer without state) is `<table>: Writer`. It keeps the old name here, so it, and the operators before it that
    # are known by the sinks they feed, keep their ids: the JDBC sink's savepoints restore (its state is left unread).
    written = re.fullmatch(r"(candles_1m|signals): Writer", name)
    return f"Sink: {written.group(1)}" if written else name


def operator_keys(graph: Any) -> dict[int, str]:
    """Stream node id → `op:<normalized name>` where that name is the graph's only one (sources and sinks are named
    after their tables), else `op:<normalized name>><the sinks it feeds, sorted>`."""
    nodes = {node.getId(): node for node in graph.getStreamNodes().toArray()}
    sinks: dict[int, frozenset[str]] = {}

    def reached(node_id: int) -> frozenset[str]:
        if node_id not in sinks:
            node = nodes[node_id]
            targets = [edge.getTargetId() for edge in node.getOutEdges().toArray()]
            sinks[node_id] = (
                frozenset().union(*(reached(target) for target in targets))
                if targets
                else frozenset({_normalized(node.getOperatorName())})
            )
        return sinks[node_id]

    names = [_normalized(node.getOperatorName()) for node in nodes.values()]
    return {
        node_id: f"op:{name}" if names.count(name) == 1 else f"op:{name}>{','.join(sorted(reached(node_id)))}"
        for node_id, name in ((node_id, _normalized(node.getOperatorName())) for node_id, node in nodes.items())
    }


def pin(graph: Any) -> list[str]:
    """Give the graph's operators without a uid a fixed one (and their previous id); return the uids given."""
    keys = operator_keys(graph)
    counts: dict[str, int] = {}
    for key in keys.values():
        counts[key] = counts.get(key, 0) + 1
    pinned = []
    for node in graph.getStreamNodes().toArray():
        key = keys[node.getId()]
        if node.getTransformationUID() is not None or counts[key] > 1:
            continue
        node.setTransformationUID(key)
        previous = PREVIOUS_IDS.get(key)
        if previous is not None and node.getUserHash() is None:
            node.setUserHash(previous)
        pinned.append(key)
    return pinned
