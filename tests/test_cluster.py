"""A node of a 3-node RabbitMQ cluster stops in the middle of a confirmed stream.

The module starts its own cluster on this machine (munggoggo.testing.cluster, under a
directory of its own, AMQP ports 5681-5683; the main broker on 5672 is not touched) and
removes it afterwards; where nodes cannot be started (no RabbitMQ package scripts, a port
taken) the tests are skipped with the reason. Marked `cluster`: CI runs them in its first
pass only (.ci/run), since they test the broker side, not our compiled hot paths.

The failover run itself is bench/cluster/failover.py (also `python -m bench cluster
failover`): two durable-mode agents with the cluster's URL list, the node both use stopped
with `rabbitmqctl stop_app`, and every published number counted on the other side.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cluster.failover import failover
from munggoggo import Agent, AgentConfig
from munggoggo.testing import Cluster, ClusterError

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def _remove_abandoned_clusters() -> None:
    """Clusters of test runs that were killed before their teardown: their nodes would hold
    the ports. A directory whose pytest process is gone is stopped and removed."""
    for base in Path("/var/tmp").glob("munggoggo-cluster-test-*"):
        pid = base.name.rpartition("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            Cluster(base=base).stop()


@pytest.fixture(scope="module")
def cluster():
    _remove_abandoned_clusters()
    c = Cluster(base=Path(f"/var/tmp/munggoggo-cluster-test-{os.getpid()}"))
    try:
        c.start()
    except ClusterError as exc:
        pytest.skip(f"cannot start a 3-node RabbitMQ cluster on this machine: {exc}")
    yield c
    c.stop()


def test_the_nodes_form_one_cluster(cluster):
    assert sorted(cluster.running_nodes()) == sorted(n.name for n in cluster.nodes)
    status = cluster.status()
    assert all(node["amqp"] for node in status["nodes"].values())


async def test_quorum_queues_span_the_cluster(cluster):
    async with Agent("cluster-probe", url=cluster.urls, config=AgentConfig(queue_type="quorum")):
        members = cluster.ctl(cluster.nodes[0], "list_queues", "name", "type", "members")
    line = next(row for row in members.splitlines() if row.startswith("munggoggo.dead-letters"))
    assert "quorum" in line  # created by a durable-mode agent on an empty cluster
    assert all(n.name in line for n in cluster.nodes)  # a member on every node


async def test_no_confirmed_message_is_lost_when_a_node_stops(cluster):
    result = await failover(cluster, before=3000, after=3000, timeout=60)
    print(result)
    assert result["stopped_node"] == cluster.nodes[0].name  # the first URL's node
    assert result["publisher_now_on"] != result["stopped_node"]
    assert result["consumer_now_on"] != result["stopped_node"]
    assert result["queue_leader_after"] in {n.name for n in cluster.nodes[1:]}
    assert result["sent"] >= 6000
    assert result["failed_reported"] == 0  # every publish was confirmed (republished ones too)
    assert result["lost"] == 0
    assert result["consumed"] == result["sent"]
    # The stopped node was started again and rejoined.
    assert sorted(cluster.running_nodes()) == sorted(n.name for n in cluster.nodes)
