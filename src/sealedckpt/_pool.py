"""Running independent jobs on a few threads, failing as a serial loop would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_all(job: Callable[[T], object], items: Sequence[T], workers: int, name: str) -> None:
    """``job(item)`` for every item, on ``workers`` threads (inline for one); re-raises the failure
    of the first failing item in order and cancels the items not yet started."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            job(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(job, item) for item in items]
        try:
            for fut in futures:
                fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def run_two(job: Callable[[T], object], first: T, second: T, name: str) -> None:
    """``job(first)`` on this thread while ``job(second)`` runs on one new thread (cheaper than a
    pool for two items); waits for both, then re-raises ``first``'s failure, else ``second``'s."""
    failed: list[BaseException] = []

    def other() -> None:
        try:
            job(second)
        except BaseException as exc:  # re-raised on the calling thread below
            failed.append(exc)

    t = threading.Thread(target=other, name=name, daemon=True)
    t.start()
    try:
        job(first)
    finally:
        t.join()
    if failed:
        raise failed[0]
