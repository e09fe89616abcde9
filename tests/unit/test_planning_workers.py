"""Planning processes run at a lower CPU priority than the process that
writes what they plan (SPEC 12: upstream write waits)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from service.config import Settings
from service.engine.chunks import WORKER_NICENESS, _init_worker
from service.engine.core import PlanContext
from service.planning.model import Campaigns


def test_a_planning_process_is_niced_below_its_parent() -> None:
    ctx = PlanContext.from_settings(Settings())
    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(ctx, Campaigns(), None),
    ) as pool:
        worker = pool.submit(os.nice, 0).result(timeout=60)
    assert worker == min(19, os.nice(0) + WORKER_NICENESS)
