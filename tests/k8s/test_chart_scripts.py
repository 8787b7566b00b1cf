"""The chart's start scripts (run by the real /bin/sh, as in the images) and the membership Job's plans.

node-start.sh and gateway-start.sh end in `exec dscore-node` / `exec dscore-gateway`; here a stand-in
program of that name on PATH prints the environment it was given, so the test sees exactly what the
service would read. (The services' own settings are checked against those values in
test_chart_render.py::test_cluster_settings_are_the_ones_dscore_reads.)
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from chart_helpers import CHART

FILES = CHART / "files"


def _membership() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_membership", FILES / "membership.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_membership"] = module
    spec.loader.exec_module(module)
    return module


membership = _membership()


class Pod:
    """A pod's mounted topology and node ids, and a stand-in service that prints its environment."""

    def __init__(
        self, root: Path, replicas: int, founding: int, node_ids: dict[str, str] | None = None
    ) -> None:
        self.topology = root / "topology"
        self.ids = root / "node-ids"
        self.bin = root / "bin"
        for folder in (self.topology, self.ids, self.bin):
            folder.mkdir(parents=True, exist_ok=True)
        (self.topology / "statefulset").write_text("kv-node")
        (self.topology / "replicas").write_text(str(replicas))
        (self.topology / "founding-members").write_text(str(founding))
        for pod, node in (node_ids or {}).items():
            (self.ids / pod).write_text(node)
        for service in ("dscore-node", "dscore-gateway"):
            stand_in = self.bin / service
            stand_in.write_text(
                "#!/bin/sh\n"
                f'echo "service={service} args=$* pid=$$"\n'
                'env | grep -E "^DSCORE_(NODE_ID|PEERS|INITIAL_CLUSTER_STATE|NODES)=" | sort\n'
            )
            stand_in.chmod(0o755)

    def run(self, script: str, pod_name: str = "") -> tuple[int, dict[str, str], str]:
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "DSCORE_CHART_TOPOLOGY_DIR": str(self.topology),
            "DSCORE_CHART_NODE_IDS_DIR": str(self.ids),
        }
        if pod_name:
            env["POD_NAME"] = pod_name
        done = subprocess.run(
            ["/bin/sh", str(FILES / script), "--flag"],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        lines = done.stdout.splitlines()
        out = dict(line.split("=", 1) for line in lines[1:]) if lines else {}
        if lines:
            out["_first"] = lines[0]
        return done.returncode, out, done.stderr


@pytest.mark.parametrize(
    ("pod", "peers"),
    [
        ("kv-node-0", "kv-node-1,kv-node-2"),
        ("kv-node-1", "kv-node-0,kv-node-2"),
        ("kv-node-2", "kv-node-0,kv-node-1"),
    ],
)
def test_founding_members_start_new_with_the_other_ordinals_as_peers(
    tmp_path: Path, pod: str, peers: str
) -> None:
    code, env, stderr = Pod(tmp_path, replicas=3, founding=3).run("node-start.sh", pod)
    assert code == 0, stderr
    assert env["DSCORE_NODE_ID"] == pod
    assert env["DSCORE_PEERS"] == peers
    assert env["DSCORE_INITIAL_CLUSTER_STATE"] == "new"
    # exec: the service replaced the shell (same pid: tini signals the service itself) and got the args.
    assert env["_first"].startswith("service=dscore-node args=--flag pid=")


def test_ordinals_added_by_a_scale_up_join_the_existing_cluster(tmp_path: Path) -> None:
    pod = Pod(tmp_path, replicas=5, founding=3)
    code, env, _ = pod.run("node-start.sh", "kv-node-3")
    assert code == 0
    assert env["DSCORE_INITIAL_CLUSTER_STATE"] == "existing"
    assert env["DSCORE_PEERS"] == "kv-node-0,kv-node-1,kv-node-2,kv-node-4"
    # A founding member restarted after the scale-up still says `new`: its stored configuration wins.
    assert pod.run("node-start.sh", "kv-node-0")[1]["DSCORE_INITIAL_CLUSTER_STATE"] == "new"


def test_a_renamed_member_joins_under_its_new_id(tmp_path: Path) -> None:
    pod = Pod(tmp_path, replicas=3, founding=3, node_ids={"kv-node-1": "kv-node-1.g2"})
    code, env, _ = pod.run("node-start.sh", "kv-node-1")
    assert code == 0
    assert env["DSCORE_NODE_ID"] == "kv-node-1.g2"
    assert env["DSCORE_INITIAL_CLUSTER_STATE"] == "existing"
    assert pod.run("node-start.sh", "kv-node-0")[1]["DSCORE_PEERS"] == "kv-node-1.g2,kv-node-2"
    assert pod.run("gateway-start.sh")[1]["DSCORE_NODES"] == "kv-node-0,kv-node-1.g2,kv-node-2"


def test_a_pod_above_the_replica_count_still_starts(tmp_path: Path) -> None:
    # During a scale-down the StatefulSet deletes it; until then a restart must not fail on its settings.
    code, env, _ = Pod(tmp_path, replicas=3, founding=5).run("node-start.sh", "kv-node-4")
    assert code == 0
    assert env["DSCORE_PEERS"] == "kv-node-0,kv-node-1,kv-node-2,kv-node-3"


def test_single_node(tmp_path: Path) -> None:
    code, env, _ = Pod(tmp_path, replicas=1, founding=1).run("node-start.sh", "kv-node-0")
    assert code == 0 and env["DSCORE_PEERS"] == "" and env["DSCORE_INITIAL_CLUSTER_STATE"] == "new"


@pytest.mark.parametrize(
    ("pod_name", "message"),
    [
        ("", "POD_NAME is not set"),
        ("kv-node-x", "does not end in an ordinal"),
        ("other-node-1", "not a pod of"),
    ],
)
def test_node_start_refuses_a_wrong_pod(tmp_path: Path, pod_name: str, message: str) -> None:
    code, _, stderr = Pod(tmp_path, replicas=3, founding=3).run("node-start.sh", pod_name)
    assert code == 2 and message in stderr


def test_node_start_names_a_missing_topology(tmp_path: Path) -> None:
    pod = Pod(tmp_path, replicas=3, founding=3)
    (pod.topology / "replicas").unlink()
    code, _, stderr = pod.run("node-start.sh", "kv-node-0")
    assert code == 2 and "replicas" in stderr and "topology ConfigMap" in stderr


def test_gateway_gets_every_member(tmp_path: Path) -> None:
    code, env, _ = Pod(tmp_path, replicas=5, founding=3).run("gateway-start.sh")
    assert code == 0
    assert env["DSCORE_NODES"] == ",".join(f"kv-node-{i}" for i in range(5))
    assert env["_first"].startswith("service=dscore-gateway")


def test_scripts_are_posix_sh() -> None:
    # dash (Debian's /bin/sh, as in the images) parses both without running them.
    for script in ("node-start.sh", "gateway-start.sh"):
        done = subprocess.run(
            ["/bin/sh", "-n", str(FILES / script)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    assert os.path.realpath("/bin/sh").endswith(("dash", "bash"))


# -- membership plans --------------------------------------------------------------------------------------


def view(voters: str, learners: str = "", removed: str = "", leader: str = "kv-node-0") -> object:
    split = lambda text: frozenset(t for t in text.split(",") if t)  # noqa: E731
    return membership.ClusterView(leader, split(voters), split(learners), split(removed))


def kinds(plan: object) -> list[tuple[str, str]]:
    return [(a.kind, a.node_id) for a in plan.actions]  # type: ignore[attr-defined]


def test_nothing_to_do_when_the_membership_matches() -> None:
    plan = membership.plan_pre(view("kv-node-0,kv-node-1,kv-node-2"), "kv-node", 3, {})
    assert kinds(plan) == []
    assert plan.describe() == "nothing to do"


def test_scale_down_removes_the_highest_ordinals_first() -> None:
    plan = membership.plan_pre(view("kv-node-0,kv-node-1,kv-node-2,kv-node-3,kv-node-4"), "kv-node", 3, {})
    assert kinds(plan) == [("remove", "kv-node-4"), ("remove", "kv-node-3")]


def test_scale_down_to_one_removes_the_leader_too() -> None:
    plan = membership.plan_pre(view("kv-node-0,kv-node-1,kv-node-2", leader="kv-node-2"), "kv-node", 1, {})
    assert kinds(plan) == [("remove", "kv-node-2"), ("remove", "kv-node-1")]


def test_scale_up_adds_learners_then_promotes_them() -> None:
    before = view("kv-node-0,kv-node-1,kv-node-2")
    assert kinds(membership.plan_pre(before, "kv-node", 5, {})) == [
        ("add_learner", "kv-node-3"),
        ("add_learner", "kv-node-4"),
    ]
    during = view("kv-node-0,kv-node-1,kv-node-2", learners="kv-node-3,kv-node-4")
    assert kinds(membership.plan_pre(during, "kv-node", 5, {})) == []
    assert kinds(membership.plan_post(during, "kv-node", 5, {})) == [
        ("promote", "kv-node-3"),
        ("promote", "kv-node-4"),
    ]


def test_scale_up_over_removed_ids_renames_the_pods() -> None:
    # 5 -> 3 removed kv-node-3 and kv-node-4; ids are never reused, so 3 -> 5 gives them new ones.
    after_scale_down = view("kv-node-0,kv-node-1,kv-node-2", removed="kv-node-3,kv-node-4")
    plan = membership.plan_pre(after_scale_down, "kv-node", 5, {})
    assert kinds(plan) == [
        ("rename", "kv-node-3.g2"),
        ("add_learner", "kv-node-3.g2"),
        ("rename", "kv-node-4.g2"),
        ("add_learner", "kv-node-4.g2"),
    ]
    assert [a.pod for a in plan.actions] == ["kv-node-3", "kv-node-3", "kv-node-4", "kv-node-4"]
    # ... and a third time, past the second generation too.
    again = view("kv-node-0,kv-node-1,kv-node-2", removed="kv-node-3,kv-node-4,kv-node-3.g2,kv-node-4.g2")
    plan = membership.plan_pre(
        again, "kv-node", 4, {"kv-node-3": "kv-node-3.g2", "kv-node-4": "kv-node-4.g2"}
    )
    assert kinds(plan) == [("rename", "kv-node-3.g3"), ("add_learner", "kv-node-3.g3")]


def test_scale_down_of_a_renamed_member_removes_its_id() -> None:
    current = view("kv-node-0,kv-node-1,kv-node-2,kv-node-3.g2", removed="kv-node-3")
    plan = membership.plan_pre(current, "kv-node", 3, {"kv-node-3": "kv-node-3.g2"})
    assert kinds(plan) == [("remove", "kv-node-3.g2")]


def test_replicas_below_one_are_refused() -> None:
    with pytest.raises(membership.MembershipError, match="at least 1"):
        membership.plan_pre(view("kv-node-0"), "kv-node", 0, {})


class FakeNodes(membership.Nodes):  # type: ignore[misc,name-defined]
    """A stand-in leader that applies each change at once: only the Job's loop and plans are under test
    here. The same loop against real `dscore-node` processes (Kafka, Redis, the real admin API and its
    token): tests/e2e/test_e2e_chart_membership.py."""

    def __init__(self, voters: set[str], learners: set[str], removed: set[str]) -> None:
        super().__init__("kv-node", "kv-node-peers", "ns", 8080, "token", fetch=self._serve)
        self.voters, self.learners, self.removed = voters, learners, removed
        self.calls: list[str] = []

    def _serve(self, url: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        pod = url.split("//")[1].split(".", maxsplit=1)[0]
        path = "/" + url.split("/", 3)[3]
        if path == "/debug/state":
            members = self.voters | self.learners
            if not any(pod == member.split(".g")[0] for member in members):
                raise OSError(f"{pod}: no such host")
            return 200, {
                "node_id": "kv-node-0",
                "role": "leader" if pod == "kv-node-0" else "follower",
                "leader_id": "kv-node-0",
                "voters": sorted(self.voters),
                "learners": sorted(self.learners),
                "removed": sorted(self.removed),
                "commit_index": 7,
                "applied_index": 7,
            }
        assert headers == {"Authorization": "Bearer token"}
        self.calls.append(f"{method} {path}")
        if path.startswith("/admin/introduce/"):
            return 200, {}
        if method == "DELETE":
            node = path.rsplit("/", 1)[1]
            self.voters.discard(node)
            self.learners.discard(node)
            self.removed.add(node)
        elif path.endswith("?learner=true"):
            self.learners.add(path.split("/")[3].split("?")[0])
        else:
            node = path.split("/")[3]
            self.learners.discard(node)
            self.voters.add(node)
        return 200, {}


def test_the_job_loop_reaches_the_wanted_membership() -> None:
    nodes = FakeNodes({"kv-node-0", "kv-node-1", "kv-node-2", "kv-node-3", "kv-node-4"}, set(), set())
    args = type("Args", (), {"statefulset": "kv-node", "replicas": 3, "running_replicas": 5})()
    ids: dict[str, str] = {}
    membership.run("pre", args, nodes, ids, set_node_id=lambda pod, node: None, deadline=float("inf"))
    assert nodes.calls == ["DELETE /admin/members/kv-node-4", "DELETE /admin/members/kv-node-3"]
    assert nodes.voters == {"kv-node-0", "kv-node-1", "kv-node-2"}
    # Back up to 5: the removed ids come back renamed, as learners, then voters.
    nodes.calls.clear()
    renamed: dict[str, str] = {}
    args.replicas, args.running_replicas = 5, 3
    membership.run("pre", args, nodes, ids, set_node_id=renamed.__setitem__, deadline=float("inf"))
    membership.run("post", args, nodes, ids, set_node_id=renamed.__setitem__, deadline=float("inf"))
    assert renamed == {"kv-node-3": "kv-node-3.g2", "kv-node-4": "kv-node-4.g2"}
    for node in ("kv-node-3.g2", "kv-node-4.g2"):  # introduced to the running members before the add
        first_add = nodes.calls.index(f"POST /admin/members/{node}?learner=true")
        assert f"POST /admin/introduce/{node}" in nodes.calls[:first_add]
    assert [call for call in nodes.calls if "introduce" not in call] == [
        "POST /admin/members/kv-node-3.g2?learner=true",
        "POST /admin/members/kv-node-4.g2?learner=true",
        "POST /admin/members/kv-node-3.g2/promote",
        "POST /admin/members/kv-node-4.g2/promote",
    ]
    assert nodes.voters == {"kv-node-0", "kv-node-1", "kv-node-2", "kv-node-3.g2", "kv-node-4.g2"}


def test_the_job_says_what_the_node_lacks() -> None:
    nodes = FakeNodes({"kv-node-0"}, set(), set())
    real_serve = nodes._serve

    def old_node(url: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        status, state = real_serve(url, method, headers)
        state.pop("removed", None)
        return status, state

    nodes._fetch = old_node
    args = type("Args", (), {"statefulset": "kv-node", "replicas": 2, "running_replicas": 1})()
    with pytest.raises(membership.MembershipError, match=r"no 'removed'.*membership Job needs"):
        membership.run("pre", args, nodes, {}, set_node_id=lambda pod, node: None, deadline=float("inf"))


@pytest.mark.parametrize(
    ("status", "answer", "retry"),
    [
        (421, {"error": "not_leader"}, True),
        (503, {"error": "not_running"}, True),  # the node is stopping or starting: nothing proposed
        (504, {"error": "outcome unknown"}, True),
        (409, {"error": "change_in_progress"}, True),
        (409, {"error": "id_removed"}, False),
    ],
)
def test_the_job_retries_what_the_admin_api_says_to_retry(
    status: int, answer: dict[str, object], retry: bool
) -> None:
    nodes = FakeNodes({"kv-node-0"}, set(), set())
    nodes._fetch = lambda url, method, headers: (status, answer)
    if retry:
        assert nodes.change("kv-node-0", "POST", "/admin/members/kv-node-1?learner=true") is False
    else:
        with pytest.raises(membership.MembershipError, match=str(status)):
            nodes.change("kv-node-0", "POST", "/admin/members/kv-node-1?learner=true")
