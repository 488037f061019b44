"""The ablation table of a sweep, rebuilt from MLflow: Markdown, CSV and a plot, beside the paper's numbers.

Rows are the trials (labelled by their axis values), columns our metric per fine-tuning target and, where
the sweep names a paper table (`table.paper`) with a row for the label, the paper's number beside ours: in
the column of the same dataset (a ucf101 target beside the paper's UCF101), else in its own column.

Each of our cells carries its uncertainty (see `stats`): mean ± sample std over the sweep's seeds, or, for
one run, a bootstrap 95 % interval over the test videos; the table's note says which, and the CSV has the
bounds, the spread and each seed's value in columns of their own.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmgflow.errors import PmgflowError
from pmgflow.orchestrate import tracking
from pmgflow.orchestrate.paper import DATASET_COLUMNS, TABLES, PaperTable
from pmgflow.orchestrate.stats import RESAMPLES, Estimate, read_estimate

Cell = str | float | Estimate | None
PAPER_MARKERS = ("*", "D", "^", "s")
# The CSV columns an Estimate cell becomes, after its own (the value): suffix -> what they hold.
ESTIMATE_COLUMNS = ("lo", "hi", "std", "n", "per seed")


@dataclass
class TrialRecord:
    """One trial as MLflow holds it."""

    index: int
    labels: dict[str, str]
    status: str
    error: str | None
    metrics: dict[str, float]
    run_id: str
    earlier: bool = False  # its result is from an earlier parent run of this sweep (same trial spec)


@dataclass
class SweepRecord:
    """A sweep as MLflow holds it: the parent run's table settings and every child run."""

    name: str
    run_id: str
    axes: list[str]
    row: str | None
    metric: str
    paper: str | None
    targets: dict[str, str]
    trials: list[TrialRecord] = field(default_factory=list)


@dataclass
class Table:
    """A header and rows of cells (numbers stay numbers until formatted)."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""
    uncertain: tuple[str, ...] = ()  # headers of the columns whose cells are Estimates

    def markdown(self) -> str:
        """A GitHub Markdown table (numbers to one decimal with their uncertainty, missing as a dash), title and
        note around it."""
        def fmt(c: Cell) -> str:
            if c is None or (isinstance(c, float) and math.isnan(c)):
                return "–"
            if isinstance(c, Estimate):
                return c.format()
            return f"{c:.1f}" if isinstance(c, float) else str(c).replace("|", "\\|").replace("\n", " ")

        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines + (["", self.note] if self.note else [])) + "\n"

    def csv(self) -> str:
        """CSV: one column per header, and after each uncertain column its lo, hi, std, n and per-seed values
        (';'-separated, in seed order); empty where a value is missing."""
        def cells(header: str, c: Cell) -> list[Any]:
            if header not in self.uncertain:
                return ["" if c is None else c]
            if not isinstance(c, Estimate):
                return ["" if c is None else c] + [""] * len(ESTIMATE_COLUMNS)
            return [c.value, *("" if v is None else v for v in (c.lo, c.hi, c.std)), c.n,
                    ";".join(map(str, c.values))]

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([name for h in self.header
                         for name in [h, *((f"{h} {s}" for s in ESTIMATE_COLUMNS) if h in self.uncertain else ())]])
        writer.writerows([[v for h, c in zip(self.header, row) for v in cells(h, c)] for row in self.rows])
        return out.getvalue()


def load_record(uri: str, ref: str) -> SweepRecord:
    """Read a sweep (name or parent run id) and its trials from the tracking store.

    A sweep file that changed (a row added, a comment edited in a way that changes a trial) makes a new parent run;
    its trials that did not finish there (left out by `--only`, interrupted) take the newest finished run of the
    same trial spec (same trial hash) under an earlier parent of the same sweep, and the table says so.
    """
    client = tracking.client(uri)
    parent = tracking.find_sweep_run(client, ref, uri)
    tags = parent.data.tags
    table = json.loads(tags.get(tracking.TABLE, "{}"))
    record = SweepRecord(name=tags.get(tracking.SWEEP, ref), run_id=parent.info.run_id,
                         axes=json.loads(tags.get(tracking.AXES, "[]")), row=table.get("row"),
                         metric=table.get("metric", "top1"), paper=table.get("paper"),
                         targets=json.loads(tags.get(tracking.TARGETS, "{}")))
    for run in tracking.child_runs(client, parent):
        t = run.data.tags
        earlier = None if run.info.status == "FINISHED" else tracking.earlier_finished_trial(client, run)
        source = earlier or run
        record.trials.append(TrialRecord(index=int(t.get(tracking.TRIAL_INDEX, 0)),
                                         labels=json.loads(t.get(tracking.LABELS, "{}")), status=source.info.status,
                                         error=source.data.tags.get(tracking.ERROR),
                                         metrics=dict(source.data.metrics), run_id=source.info.run_id,
                                         earlier=earlier is not None))
    return record


def _paper_rows(record: SweepRecord, paper: PaperTable | None) -> dict[int, dict[str, float]]:
    """Trial index -> the paper's numbers of the row its row-axis label names (empty where none)."""
    row_axis = record.row
    return {t.index: (paper.lookup(t.labels.get(row_axis, "")) if paper and row_axis else None) or {}
            for t in record.trials}


def uncertainty_note(record: SweepRecord) -> str:
    """What the ± and [lo, hi] of the table mean: the seeds behind a mean, the test videos behind an interval."""
    estimates = [e for t in record.trials for target in record.targets
                 if (e := read_estimate(t.metrics, record.metric, target)) is not None]
    videos = {target: int(v) for target in record.targets for t in record.trials
              if (v := t.metrics.get(f"test_videos.{target}")) is not None}
    if len(set(videos.values())) == 1:
        over = f"the {next(iter(videos.values()))} test videos"
    else:
        over = "the test videos" + (f" ({', '.join(f'{k} {n}' for k, n in videos.items())})" if videos else "")
    seeded = sorted({e.seeds for e in estimates if e.n > 1})
    parts = []
    if seeded:
        seeds = ", ".join("(" + ", ".join(map(str, s)) + ")" for s in seeded)
        parts.append(f"x ± s (n=k: ...) is the mean over k = {'/'.join(str(len(s)) for s in seeded)} fine-tuning "
                     f"seeds {seeds} ± their sample standard deviation, then each seed's value (a trial's seeds share "
                     "its pre-training); "
                     f"its CSV lo/hi columns are a percentile bootstrap 95 % interval over {over} of the per-video "
                     f"mean over seeds ({RESAMPLES} resamples, fixed seed).")
    if any(e.n == 1 and e.lo is not None for e in estimates):
        parts.append(f"x [lo, hi] is one fine-tuning with its percentile bootstrap 95 % interval over {over} "
                     f"({RESAMPLES} resamples, fixed seed).")
    if any(e.n == 1 and e.lo is None for e in estimates):
        parts.append("A bare number has no per-video record to give its uncertainty.")
    return " ".join(parts)


def ablation_table(record: SweepRecord) -> Table:
    """Rows = trials by axis labels; columns = our metric per target (with its uncertainty), the paper's beside it
    where known."""
    paper = TABLES.get(record.paper) if record.paper else None
    paper_rows = _paper_rows(record, paper)
    columns: list[tuple[str, str, str]] = []  # (header, kind: ours|paper, key)
    matched = set()
    for target, kind in record.targets.items():
        columns.append((f"{record.metric} {target}", "ours", target))
        column = DATASET_COLUMNS.get(kind)
        if paper and column in paper.columns:
            columns.append((f"paper {column}", "paper", column))
            matched.add(column)
    if paper:
        for column in paper.columns:
            if column not in matched and any(column in r for r in paper_rows.values()):
                columns.append((f"paper {column}", "paper", column))
    failed = any(t.status != "FINISHED" for t in record.trials)
    header = (record.axes or ["trial"]) + [c[0] for c in columns] + (["status"] if failed else [])
    rows = []
    for t in record.trials:
        cells: list[Cell] = [t.labels.get(a, "") for a in record.axes] or ["base"]
        for _, kind, key in columns:
            cells.append(read_estimate(t.metrics, record.metric, key) if kind == "ours"
                         else paper_rows[t.index].get(key))
        if failed:
            cells.append(status_cell(t))
        rows.append(cells)
    notes = [uncertainty_note(record)]
    if earlier := [t for t in record.trials if t.earlier]:
        labels = "; ".join(", ".join(t.labels.values()) or str(t.index) for t in earlier)
        notes.append(f"{len(earlier)} row(s) ({labels}) are from an earlier run of this sweep with the same trial "
                     "spec: the sweep file changed since, and this run did not finish them.")
    if paper:
        notes.append(f"Paper: {paper.title}; {paper.provenance}{' ' + paper.note if paper.note else ''} "
                     "Our numbers are at this sweep's scale and on its datasets.")
    return Table(f"{record.name}: {record.metric} (%)", header, rows, " ".join(n for n in notes if n),
                 tuple(c[0] for c in columns if c[1] == "ours"))


# What an unfinished trial with no recorded error is doing: a sweep marks its trials SCHEDULED when it starts
# and each RUNNING when it begins (a sweep killed outright leaves that until the next run of the same file).
UNFINISHED = {"SCHEDULED": "not started yet",
              "RUNNING": "running, or its sweep was killed; the same command resumes it"}


def status_cell(t: TrialRecord) -> str:
    """The status column of one trial: ok, or the MLflow status with the recorded error or what it means."""
    if t.status == "FINISHED":
        return "ok"
    return f"{t.status}: {t.error or UNFINISHED.get(t.status, 'no error recorded')}"


def _numeric(labels: list[str]) -> list[float] | None:
    try:
        return [float(x) for x in labels]
    except ValueError:
        return None


def _yerr(points: list[Estimate]):
    """A (2, n) array of error-bar lengths below/above each point (0 where a point has none), or None."""
    import numpy as np

    errors = [e.error() for e in points]
    if all(e is None for e in errors):
        return None
    return np.array([e or (0.0, 0.0) for e in errors], dtype=float).T


def chance_levels(record: SweepRecord) -> dict[float, list[str]]:
    """Chance top-1 (100 / classes, in %) -> the targets at that level, from the logged class counts."""
    levels: dict[float, list[str]] = {}
    for target in record.targets:
        key = f"classes.{target}"
        classes = next((t.metrics[key] for t in record.trials if key in t.metrics), None)
        if classes:
            levels.setdefault(100 / classes, []).append(target)
    return levels


def metric_figure(record: SweepRecord):
    """Our metric against the row axis, with error bars (std over seeds, else the bootstrap interval): one line
    (or bar group) per target and combination of the other axes; the chance level as a dashed line and the
    paper's numbers, where it has them, as markers (one shape per dataset). A matplotlib Figure (no pyplot
    state)."""
    from matplotlib.figure import Figure

    row = record.row
    others = [a for a in record.axes if a != row]
    xs = list(dict.fromkeys(t.labels.get(row, "base") if row else "base" for t in record.trials))
    numeric = _numeric(xs)

    def position(x: str) -> float:
        return float(x) if numeric is not None else float(xs.index(x))

    fig = Figure(figsize=(max(5.0, 0.7 * len(xs) + 2) + 2, 3.6), dpi=120)  # + the legend beside the axes
    ax = fig.subplots()
    series: dict[str, dict[str, Estimate]] = {}
    for t in record.trials:
        for target in record.targets:
            value = read_estimate(t.metrics, record.metric, target)
            if value is None:
                continue
            name = ", ".join([target] + [f"{a}={t.labels.get(a)}" for a in others])
            series.setdefault(name, {})[t.labels.get(row, "base") if row else "base"] = value
    for k, (name, points) in enumerate(series.items()):
        at = [x for x in xs if x in points]
        ys, yerr = [points[x].value for x in at], _yerr([points[x] for x in at])
        if numeric is not None:
            ax.errorbar([position(x) for x in at], ys, yerr=yerr, marker="o", capsize=3, label=name)
        else:
            width = 0.8 / max(len(series), 1)
            ax.bar([position(x) + (k - (len(series) - 1) / 2) * width for x in at], ys, width=width, yerr=yerr,
                   capsize=3, label=name)
    for level, targets in chance_levels(record).items():
        ax.axhline(level, linestyle="--", color="0.45", linewidth=1,
                   label=f"chance ({', '.join(targets)}: {level:.1f})")
    paper = TABLES.get(record.paper) if record.paper else None
    paper_rows = _paper_rows(record, paper)
    paper_points: dict[str, dict[str, float]] = {}  # paper column -> row label -> value
    for t in record.trials:
        for column, value in paper_rows[t.index].items():
            paper_points.setdefault(column, {})[t.labels.get(row, "base") if row else "base"] = value
    for j, (column, points) in enumerate(paper_points.items()):
        at = [x for x in xs if x in points]
        # side by side within a category (two datasets' numbers can be close); one marker shape per dataset
        shift = (j - (len(paper_points) - 1) / 2) * 0.15 if numeric is None else 0.0
        ax.scatter([position(x) + shift for x in at], [points[x] for x in at], marker=PAPER_MARKERS[j % 4],
                   s=60, edgecolors="black", linewidths=0.5, zorder=3, label=f"paper {column}")
    if numeric is None:
        ax.set_xticks(range(len(xs)), xs, rotation=30 if len(xs) > 4 else 0, ha="right" if len(xs) > 4 else "center")
    ax.set_xlabel(row or "trial")
    ax.set_ylabel(f"{record.metric} (%)")
    ax.set_title(record.name)
    ax.grid(alpha=0.3)
    if series or paper_points:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def plot_metric(record: SweepRecord, path: Path) -> Path:
    """The sweep's metric_figure as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metric_figure(record).savefig(path, bbox_inches="tight")
    return path


def plot_loss_curves(curves: dict[str, list[tuple[int, float | None]]], path: Path) -> Path:
    """Training loss per epoch of each stage of a trial (pre-training, each fine-tuning target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    for stage, points in curves.items():
        points = [(e, v) for e, v in points if v is not None]
        if points:
            ax.plot([e + 1 for e, _ in points], [v for _, v in points], marker=".", label=stage)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(record: SweepRecord, out: Path) -> list[Path]:
    """report.md, report.csv and report.png of a sweep in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    table = ablation_table(record)
    md, csv_path = out / f"{record.name}.md", out / f"{record.name}.csv"
    md.write_text(table.markdown())
    csv_path.write_text(table.csv())
    return [md, csv_path, plot_metric(record, out / f"{record.name}.png")]


def log_report(uri: str, record: SweepRecord) -> None:
    """Attach the report files to the sweep's parent run."""
    import tempfile

    client = tracking.client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_report(record, Path(tmp)):
            client.log_artifact(record.run_id, str(path), "report")


def report(uri: str, ref: str, out: Path | None = None) -> tuple[Table, list[Path]]:
    """The table of a sweep (and its files in `out`); a sweep without trials is an error."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise PmgflowError(f"no MLflow database at {uri[len('sqlite:///'):]}; run `pmgflow sweep FILE` here first, "
                           "or pass --tracking-uri")
    record = load_record(uri, ref)
    if not record.trials:
        raise PmgflowError(f"sweep {ref!r} has no trial runs in {uri}")
    table = ablation_table(record)
    return table, (write_report(record, out) if out is not None else [])


def as_rows(table: Table) -> list[dict[str, Any]]:
    """The table as a list of dicts (header -> cell), for tests and notebooks."""
    return [dict(zip(table.header, row)) for row in table.rows]
