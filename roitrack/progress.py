"""Terminal progress for long replays."""

from __future__ import annotations

from typing import Any, Iterable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from roitrack.replay import Replayer, ReplayStats


def replay_with_progress(replayer: Replayer, events: Iterable[tuple[bytes, Any]], label: str) -> ReplayStats:
    """Replay events while a progress bar counts them."""
    with Progress(
        TextColumn("[bold]replay[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=None, rate="")
        counted = 0

        def advance(count: int) -> None:
            nonlocal counted
            counted += count
            if counted % 2000 == 0:
                elapsed_s = progress.tasks[0].elapsed or 0.0
                rate = f"{counted / elapsed_s:,.0f} events/s" if elapsed_s else ""
                progress.update(task, completed=counted, rate=rate)

        replayer.on_progress = advance
        stats = replayer.replay(events)
        progress.update(task, completed=counted, total=counted)
    return stats
