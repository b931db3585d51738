# SPDX-License-Identifier: Apache-2.0
"""The engine's workers fill whole llama.cpp calls (embellama._engine.worker.Worker._fill_calls).

A joined group whose texts would end in a nearly empty call leaves its newest requests for the next joined call,
each at most once; the oldest always run.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from embellama._compute.packing import TileLayout, plan_calls
from embellama._engine.worker import FILL, Job, Worker

LAYOUT = TileLayout(64, 256)
BUDGET, MAX_SEQS = 512, 64


class _Planner:
    """What _fill_calls asks of a model: its call plan (the real packing, MiniLM's CPU layout)."""

    def __init__(self) -> None:
        self.plans: list[list[tuple[np.ndarray, float]]] = []

    def call_plan(self, lengths):
        counts = np.asarray(lengths, dtype=np.int64)
        plan = []
        for slots in plan_calls(counts, BUDGET, MAX_SEQS, LAYOUT):
            texts = slots[slots >= 0]
            plan.append((texts, float(counts[texts].sum()) / LAYOUT.call_tokens))
        self.plans.append(plan)
        return plan


def _job(lengths: list[int], deferred: bool) -> tuple[Job, Future]:
    job = Job([f"t{n}" for n in lengths], None, None, None, None, "key")  # type: ignore[arg-type]
    job.lengths, job.deferred = list(lengths), deferred
    return job, Future()


jobs = st.lists(
    st.tuples(st.lists(st.integers(1, 200), min_size=1, max_size=3), st.booleans()), min_size=2, max_size=40
)


@given(jobs=jobs)
@settings(max_examples=300, deadline=None)
def test_the_oldest_requests_run_and_the_newest_wait_once(jobs):
    group = [_job(lengths, deferred) for lengths, deferred in jobs]
    before = [job.deferred for job, _ in group]
    planner = _Planner()
    now, later = Worker._fill_calls(None, planner, group)  # type: ignore[arg-type]
    assert now + later == group  # a prefix runs, in order; nothing lost or repeated
    assert now  # the oldest request always runs
    assert len(planner.plans) == 1  # one plan: the packing is cheap, but it runs on every joined call
    for (job, _), was in zip(later, before[len(now) :], strict=True):
        assert not was and job.deferred  # none waits twice
    for (job, _), was in zip(now, before[: len(now)], strict=True):
        assert job.deferred == was
    first = planner.plans[0]
    if later:  # only a group that made an underfull extra call leaves requests
        assert len(first) > 1 and min(fill for _, fill in first) < FILL
    if len(first) == 1 or min(fill for _, fill in first) >= FILL:
        assert not later


def test_a_group_ending_in_a_nearly_empty_call_leaves_that_calls_worth():
    # 17 texts of 15 tokens: 4 per 64-token tile, so 16 fill one 256-token call and the 17th would make a call alone
    group = [_job([15], False) for _ in range(17)]
    now, later = Worker._fill_calls(None, _Planner(), group)  # type: ignore[arg-type]
    assert (len(now), len(later)) == (16, 1)
    assert len(_Planner().call_plan([15] * 16)) == 1
    again = [group[16]] + [_job([15], False) for _ in range(16)]  # it starts the next group, and runs
    now, later = Worker._fill_calls(None, _Planner(), again)  # type: ignore[arg-type]
    assert now[0] is group[16] and len(now) == 16 and len(later) == 1
