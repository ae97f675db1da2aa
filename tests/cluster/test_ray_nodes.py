"""Multi-node Ray on loopback: token auth, loopback binds, SPREAD placement, and a private Ray that
never joins a cluster running on the same machine."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from pathlib import Path

import pytest

from segarena.platform.errors import SegarenaError
from segarena.platform.run.cluster import check_shared_storage, connect

pytestmark = pytest.mark.cluster


nodes = sys.modules["segarena_cluster_nodes"]  # tests/cluster/nodes.py, loaded by conftest.py's load_nodes()
RayCluster = nodes.RayCluster
listening_on, process_tree = nodes.listening_on, nodes.process_tree


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or (getattr(ip, "ipv4_mapped", None) is not None and ip.ipv4_mapped.is_loopback)


def test_two_nodes_listen_on_loopback_only(ray_two_nodes: RayCluster) -> None:
    sockets = listening_on(ray_two_nodes.pids())
    assert len(sockets) >= 10, sockets  # GCS, 2 raylets, 2 object managers, dashboard, agents, ...
    wide = [s for s in sockets if not _loopback(s[0])]
    assert not wide, f"cluster processes listening beyond loopback: {wide}"


def test_driver_with_wrong_token_is_refused_in_one_line(joined: RayCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    t0 = time.time()
    with pytest.raises(SegarenaError) as err:
        connect(joined.address, wait_s=25)
    assert time.time() - t0 < 30
    message = str(err.value)
    print(f"\n[wrong token] {time.time() - t0:.1f}s: {message}")
    assert "\n" not in message and joined.address in message


def test_torchtrainer_spread_puts_one_worker_per_node(joined: RayCluster, tmp_path: Path) -> None:
    import ray
    from ray import train
    from ray.train.torch import TorchTrainer

    out = tmp_path / "ranks"
    out.mkdir()

    def loop(config: dict) -> None:
        import torch
        import torch.distributed as dist

        ctx = train.get_context()
        total = torch.tensor([float(ctx.get_world_rank() + 1)])
        dist.all_reduce(total)  # the two ranks really form one gloo group across the nodes
        Path(config["out"], f"{ctx.get_world_rank()}.json").write_text(json.dumps(
            {"node": ray.get_runtime_context().get_node_id(), "sum": float(total.item())}))

    with connect(joined.address) as handle:
        assert handle.started_here is False and len(handle.nodes) == 2
        check_shared_storage(tmp_path, handle.nodes)  # one machine: its /tmp is shared by both nodes
        trainer = TorchTrainer(loop, train_loop_config={"out": str(out)},
                               scaling_config=train.ScalingConfig(num_workers=2, placement_strategy="SPREAD",
                                                                  resources_per_worker={"CPU": 1}),
                               run_config=train.RunConfig(storage_path=str(tmp_path / "storage"), name="spread"))
        trainer.fit()
        cluster_nodes = {n["NodeID"] for n in handle.nodes}
    ranks = [json.loads((out / f"{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["node"] != ranks[1]["node"]
    assert {r["node"] for r in ranks} == cluster_nodes
    assert [r["sum"] for r in ranks] == [3.0, 3.0]


def test_private_ray_never_joins_a_running_cluster(joined: RayCluster, monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from ray._private import services

    # A plain ray.init() would attach to the running cluster: RAY_ADDRESS is how `ray start` clusters are found.
    monkeypatch.setenv("RAY_ADDRESS", joined.address)
    found = services.canonicalize_bootstrap_address(None)  # what ray.init() would join instead of starting one
    assert found is not None and found.endswith(":" + joined.address.rsplit(":", 1)[1])
    token_before = os.environ["RAY_AUTH_TOKEN"]
    capfd.readouterr()
    with connect(None, num_cpus=1) as handle:
        import ray

        assert handle.started_here and handle.gcs_address != joined.address
        assert handle.gcs_address.startswith("127.0.0.1:")
        assert len(handle.nodes) == 1 and ray.cluster_resources().get("CPU") == 1
        assert handle.dashboard_url and handle.dashboard_url.startswith("http://127.0.0.1:")
        private_pids = process_tree(os.getpid()) - {os.getpid()} - joined.pids()
        sockets = listening_on(private_pids | {os.getpid()})
        wide = [s for s in sockets if not _loopback(s[0])]
        print(f"\n[private ray] {len(sockets)} listening sockets, beyond loopback: {wide}")
        assert len(sockets) >= 5 and not wide, sockets
    assert os.environ["RAY_AUTH_TOKEN"] == token_before  # the cluster's token is back for later drivers
    err = capfd.readouterr().err
    assert "Token authentication is" not in err, err
