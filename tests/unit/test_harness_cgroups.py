"""The harness finds a --cgroup-parent's cgroups on every cgroup layout (fake /sys/fs/cgroup trees)."""
from pathlib import Path

from tests.harness.cgroups import cgroup_dirs, cgroup_pids, rmdir_cgroups, unified_only


def _mk(root: Path, *dirs: str, files: dict[str, str] | None = None) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (root / name).write_text(text)


def test_unified_only_host_has_one_directory_at_the_top(tmp_path):
    _mk(tmp_path, "pynet-test/abc", "system.slice/pynet-test",
        files={"cgroup.controllers": "cpu memory pids\n", "pynet-test/abc/cgroup.procs": "11\n12\n",
               "system.slice/pynet-test/cgroup.procs": "99\n"})
    assert unified_only(tmp_path)
    # Only the top-level one is ours: a cgroup of the same name elsewhere is someone else's.
    assert cgroup_dirs("pynet-test", tmp_path) == [tmp_path / "pynet-test"]
    assert cgroup_pids("pynet-test", tmp_path) == {11, 12}


def test_v1_and_hybrid_hosts_have_one_directory_per_hierarchy(tmp_path):
    _mk(tmp_path, "memory/pynet-test/abc", "pids/pynet-test", "unified/pynet-test/abc", "cpu",
        files={"unified/cgroup.controllers": "", "memory/pynet-test/abc/cgroup.procs": "21\n",
               "unified/pynet-test/abc/cgroup.procs": "21\n22\n"})
    assert not unified_only(tmp_path)
    assert cgroup_dirs("pynet-test", tmp_path) == [tmp_path / "memory/pynet-test", tmp_path / "pids/pynet-test",
                                                   tmp_path / "unified/pynet-test"]
    assert cgroup_pids("pynet-test", tmp_path) == {21, 22}


def test_rmdir_removes_empty_cgroups_children_first(tmp_path):
    _mk(tmp_path, "memory/pynet-test/a/b", "pids/pynet-test/c", "pids/other")
    rmdir_cgroups("pynet-test", tmp_path)
    assert cgroup_dirs("pynet-test", tmp_path) == []
    assert (tmp_path / "pids/other").is_dir()
