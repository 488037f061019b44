"""Terminal output shared by the commands: a rich console and progress bars for long work."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextlib.contextmanager
def progress_lines(description: str, total: int | None, every: float = 15.0) -> Iterator[Callable[..., None]]:
    """Progress for logs (output not a terminal): one line every `every` seconds and one at the end."""
    state = {"done": 0, "total": total, "info": "", "last": time.monotonic()}

    def line() -> None:
        of = f"/{state['total']}" if state["total"] else ""
        console.print(f"{description}: {state['done']}{of} {state['info']}", highlight=False, soft_wrap=True)

    def advance(n: int = 1, info: str | None = None, total: int | None = None) -> None:
        state["done"] += n
        state["info"] = info if info is not None else state["info"]
        state["total"] = total if total is not None else state["total"]
        if time.monotonic() - state["last"] >= every:
            state["last"] = time.monotonic()
            line()

    yield advance
    line()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar (plain periodic lines when not on a terminal); yields
    `advance(n=1, info=None, total=None)` for the work to call."""
    if not console.is_terminal:
        with progress_lines(description, total) as advance:
            yield advance
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None, total: int | None = None) -> None:
            fields = {"info": info} if info is not None else {}
            if total is not None:
                fields["total"] = total
            prog.update(task, advance=n, **fields)

        yield advance


@contextlib.contextmanager
def counter_bar(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar driven by `update(done, total)` callbacks (total None while unknown)."""
    with progress_bar(description, None) as advance:
        seen = [0]

        def update(done: int, total: int | None = None) -> None:
            advance(done - seen[0], total=total)
            seen[0] = done

        yield update


def summary_table(title: str, result: dict) -> None:
    """Print a run's result as a two-column table (numbers rounded, lists counted)."""
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = f"{len(value)} item(s)" if value else "none"
        table.add_row(key, str(value))
    console.print(table)
