"""The cores a build counts on: the process's affinity, capped by a cgroup CPU limit (containers, systemd)."""

from __future__ import annotations

from pathlib import Path

import pytest

import medflow.threads as threads
from medflow.engine.execute import resolve_workers
from medflow.threads import cgroup_cpu_limit


def _tree(root: Path, files: dict[str, str], membership: str) -> tuple[str, str]:
    """A fake ``/sys/fs/cgroup`` under ``root`` and a ``/proc/self/cgroup`` text; returns their paths."""
    for rel, text in files.items():
        (root / "cg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "cg" / rel).write_text(text)
    (root / "cg").mkdir(exist_ok=True)
    (root / "self-cgroup").write_text(membership)
    return str(root / "cg"), str(root / "self-cgroup")


@pytest.mark.parametrize(
    "cpu_max, expected",
    [("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None),
     ("400000 100000\n", 4), ("garbage\n", None), ("", None)],
)
def test_a_v2_containers_cpu_max_gives_whole_cores_rounded_up(tmp_path, cpu_max, expected):
    root, membership = _tree(tmp_path, {"cpu.max": cpu_max}, "0::/\n")
    assert cgroup_cpu_limit(root, membership) == expected


def test_the_tightest_limit_of_the_cgroup_and_its_parents_applies(tmp_path):
    """A systemd service's cgroup without a quota inside a slice limited to 1.5 cores: 2 cores."""
    root, membership = _tree(tmp_path, {
        "cpu.max": "max 100000\n",
        "medflow.slice/cpu.max": "150000 100000\n",
        "medflow.slice/build.service/cpu.max": "max 100000\n",
        "other.slice/cpu.max": "100000 100000\n",  # a sibling's limit is not ours
    }, "0::/medflow.slice/build.service\n")
    assert cgroup_cpu_limit(root, membership) == 2


@pytest.mark.parametrize("quota, expected", [("-1", None), ("300000", 3), ("100000", 1)])
def test_a_v1_cpu_controllers_cfs_quota_over_its_period(tmp_path, quota, expected):
    membership = "9:name=systemd:/\n4:memory:/job\n2:cpu,cpuacct:/job\n0::/\n"
    root, membership = _tree(tmp_path, {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/job/cpu.cfs_quota_us": f"{quota}\n", "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
    }, membership)
    assert cgroup_cpu_limit(root, membership) == expected


def test_lines_that_are_not_cgroup_memberships_are_ignored(tmp_path):
    root, membership = _tree(tmp_path, {"cpu.max": "100000 100000\n", "job/cpu.max": "max 100000\n"}, "garbage\n\n0::/job\n")
    assert cgroup_cpu_limit(root, membership) == 1  # the parent's limit, found through the one real line
    root, membership = _tree(tmp_path / "only-garbage", {"cpu.max": "100000 100000\n"}, "garbage\n")
    assert cgroup_cpu_limit(root, membership) is None  # no membership named: no cgroup to read


def test_no_cgroup_files_mean_no_limit(tmp_path):
    root, membership = _tree(tmp_path, {}, "0::/\n1:cpu:/\n")
    assert cgroup_cpu_limit(root, membership) is None
    assert cgroup_cpu_limit(str(tmp_path / "absent"), str(tmp_path / "absent-membership")) is None


def test_auto_workers_are_the_cores_the_limit_leaves_not_the_hosts(monkeypatch):
    """64 host cores in the affinity, a container limited to 3: 'auto' starts 3 workers."""
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 3)
    assert threads.usable_cores() == 3
    assert resolve_workers("auto") == 3
    assert threads.gather_threads(8) == 2  # 3 cores - the item's own 2 + 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert resolve_workers("auto") == 64
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 128)  # a limit above the affinity changes nothing
    assert threads.usable_cores() == 64


def test_doctor_says_how_many_cores_auto_uses_and_why(monkeypatch):
    from medflow.doctor import doctor_lines

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 4)
    assert "  CPU cores: 4 used by workers: auto (16 in its affinity, a cgroup CPU limit of 4)" in doctor_lines()
