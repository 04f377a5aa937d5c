"""The local teacher's thread count: one thread per core the other processes leave free, at least one."""

from __future__ import annotations

import torch

from distil.teachers.cpu_threads import CpuSample, ThreadChooser, busy_seconds, free_cores, threads_for

STAT = """cpu  300 0 100 900 50 0 0 0 0 0
cpu0 100 0 50 400 20 0 0 0 0 0
cpu1 200 0 50 500 30 5 5 10 0 0
cpu2 999 999 999 0 0 0 0 0 0 0
intr 1 2 3
ctxt 42
"""


def test_busy_time_counts_only_this_process_cores_and_not_idle_or_iowait():
    assert busy_seconds(STAT, {0, 1}, 100.0) == (150 + 270) / 100
    assert busy_seconds(STAT, {0}, 100.0) == 1.5
    assert busy_seconds(STAT, set(), 100.0) == 0.0


def test_free_cores_are_the_cores_less_what_other_processes_used():
    before = CpuSample(wall=10.0, busy=100.0, own=5.0)
    # in 2 s the two cores were busy 3 s, 1 s of it this process's own
    assert free_cores(before, CpuSample(12.0, 103.0, 6.0), cores=2) == 1.0
    assert free_cores(before, CpuSample(12.0, 102.0, 7.0), cores=2) == 2.0  # own time never counts as others'
    assert free_cores(before, CpuSample(10.0, 103.0, 5.0), cores=2) == 2.0  # no interval: nothing known


def test_a_thread_goes_on_a_core_only_when_most_of_it_is_free():
    assert [threads_for(f, 2) for f in (-3.0, 0.2, 1.0, 1.7, 1.8, 2.0, 5.0)] == [1, 1, 1, 1, 2, 2, 2]
    assert threads_for(7.9, 16) == 8 and threads_for(0.0, 1) == 1


def test_a_fixed_count_is_used_and_the_previous_count_restored():
    torch.set_num_threads(2)
    chooser = ThreadChooser(1)
    with chooser.applied() as count:
        assert count == 1 and torch.get_num_threads() == 1
        with chooser.applied():  # nested: the outer choice holds
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_auto_measures_this_machine_and_stays_within_its_cores():
    chooser = ThreadChooser("auto")
    first = chooser.choose()
    assert 1 <= first <= len(chooser.cores)
    assert chooser.choose() == first  # asked again at once: too short a window to measure, the choice holds
