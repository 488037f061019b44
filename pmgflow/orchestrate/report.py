"""The ablation table of a sweep, rebuilt from MLflow: Markdown, CSV and a plot, beside the paper's numbers.

Rows are the trials (labelled by their axis values), columns our metric per fine-tuning target and, where
the sweep names a paper table (`table.paper`) with a row for the label, the paper's number beside ours: in
the column of the same dataset (a ucf101 target beside the paper's UCF101), else in its own column.
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
from pmgflow.orchestrate.paper import DATASET_COLUMNS, PROVENANCE, TABLES

Cell = str | float | None


@dataclass
class TrialRecord:
    """One trial as MLflow holds it."""

    index: int
    labels: dict[str, str]
    status: str
    error: str | None
    metrics: dict[str, float]
    run_id: str


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

    def markdown(self) -> str:
        """A GitHub Markdown table (numbers to one decimal, missing as a dash), title and note around it."""
        def fmt(c: Cell) -> str:
            if c is None or (isinstance(c, float) and math.isnan(c)):
                return "–"
            return f"{c:.1f}" if isinstance(c, float) else str(c).replace("|", "\\|").replace("\n", " ")

        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines + (["", self.note] if self.note else [])) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.header)
        writer.writerows([["" if c is None else c for c in row] for row in self.rows])
        return out.getvalue()


def load_record(uri: str, ref: str) -> SweepRecord:
    """Read a sweep (name or parent run id) and its trials from the tracking store."""
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
        record.trials.append(TrialRecord(index=int(t.get(tracking.TRIAL_INDEX, 0)),
                                         labels=json.loads(t.get(tracking.LABELS, "{}")), status=run.info.status,
                                         error=t.get(tracking.ERROR), metrics=dict(run.data.metrics),
                                         run_id=run.info.run_id))
    return record


def ablation_table(record: SweepRecord) -> Table:
    """Rows = trials by axis labels; columns = our metric per target, the paper's beside it where known."""
    paper = TABLES.get(record.paper) if record.paper else None
    row_axis = record.row
    paper_rows = {t.index: (paper.lookup(t.labels.get(row_axis, "")) if paper and row_axis else None) or {}
                  for t in record.trials}
    columns: list[tuple[str, str, str]] = []  # (header, kind: ours|paper, key)
    matched = set()
    for target, kind in record.targets.items():
        columns.append((f"{record.metric} {target}", "ours", f"{record.metric}.{target}"))
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
            cells.append(t.metrics.get(key) if kind == "ours" else paper_rows[t.index].get(key))
        if failed:
            cells.append("ok" if t.status == "FINISHED" else f"{t.status}: {t.error or 'no error recorded'}")
        rows.append(cells)
    note = ""
    if paper:
        note = (f"Paper: {paper.title}; {PROVENANCE}{' ' + paper.note if paper.note else ''} "
                "Our numbers are at this sweep's scale and on its datasets.")
    return Table(f"{record.name}: {record.metric} (%)", header, rows, note)


def _numeric(labels: list[str]) -> list[float] | None:
    try:
        return [float(x) for x in labels]
    except ValueError:
        return None


def plot_metric(record: SweepRecord, path: Path) -> Path:
    """Our metric against the row axis: one line (or bar group) per target and combination of the other axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = record.row
    others = [a for a in record.axes if a != row]
    xs = list(dict.fromkeys(t.labels.get(row, "base") if row else "base" for t in record.trials))
    numeric = _numeric(xs)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(xs) + 2), 3.6), dpi=120)
    series: dict[str, dict[str, float]] = {}
    for t in record.trials:
        for target in record.targets:
            value = t.metrics.get(f"{record.metric}.{target}")
            if value is None:
                continue
            name = ", ".join([target] + [f"{a}={t.labels.get(a)}" for a in others])
            series.setdefault(name, {})[t.labels.get(row, "base") if row else "base"] = value
    for k, (name, points) in enumerate(series.items()):
        at = [x for x in xs if x in points]
        if numeric is not None:
            ax.plot([float(x) for x in at], [points[x] for x in at], marker="o", label=name)
        else:
            width = 0.8 / max(len(series), 1)
            ax.bar([xs.index(x) + (k - (len(series) - 1) / 2) * width for x in at], [points[x] for x in at],
                   width=width, label=name)
    if numeric is None:
        ax.set_xticks(range(len(xs)), xs, rotation=30 if len(xs) > 4 else 0, ha="right" if len(xs) > 4 else "center")
    ax.set_xlabel(row or "trial")
    ax.set_ylabel(f"{record.metric} (%)")
    ax.set_title(record.name)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
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
