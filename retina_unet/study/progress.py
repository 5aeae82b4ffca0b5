"""Live view of a sweep: done / running / failed / left and the time left (tqdm, to stderr)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def format_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class SweepProgress:
    """Counts runs and estimates the time left as mean run time x runs left / concurrency.

    The estimate uses the runs finished in this sweep only (earlier sweeps may have run elsewhere).
    """

    def __init__(self, total: int, already_done: int, concurrency: int, enabled: bool = True):
        self.total, self.done, self.failed, self.running = total, already_done, 0, 0
        self.concurrency = max(1, concurrency)
        self.durations: list[float] = []
        self.started = time.time()
        self.total_, self.initial, self.enabled = total, already_done, enabled
        # Drawn at the first started run, not here: what the backend prints while it starts (Ray's
        # cluster line) would otherwise be written into the middle of the bar.
        self.bar: tqdm | None = None

    @property
    def left(self) -> int:
        return self.total - self.done - self.failed - self.running

    def eta(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return mean * (self.left + self.running) / self.concurrency

    def _open(self) -> tqdm:
        if self.bar is None:
            self.bar = tqdm(total=self.total_, initial=self.initial, unit="run", file=sys.stderr,
                            disable=not self.enabled, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}",
                            postfix=self._postfix())
        return self.bar

    def _postfix(self) -> str:
        return (f"done {self.done} | running {self.running} | failed {self.failed} | left {self.left} | "
                f"ETA {format_seconds(self.eta())}")

    def _refresh(self, advance: int = 0) -> None:
        """Set the postfix and the count together, then draw once: no frame shows one without the other."""
        bar = self._open()
        bar.set_postfix_str(self._postfix(), refresh=False)
        if advance:
            bar.n += advance  # not update(): it may draw before the postfix is current
        bar.refresh()

    def started_run(self) -> None:
        self.running += 1
        self._refresh()

    def finished_run(self, label: str, ok: bool, seconds: float, detail: str = "") -> None:
        self.running -= 1
        if ok:
            self.done += 1
            self.durations.append(seconds)
        else:
            self.failed += 1
        self._open().write(
            f"[study] {'done  ' if ok else 'FAILED'} {label} in {format_seconds(seconds)} {detail}".rstrip(),
            file=sys.stderr)
        self._refresh(advance=1 if ok else 0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
