"""Indexers for the official layouts of UCF101, HMDB51 and Diving48, a dataset check and a one-off transcode.

Layouts (the official archives' folder names are accepted too, in brackets):

- UCF101: ``root/videos/<Class>/v_<Class>_gNN_cMM.avi`` [``UCF-101/``] and ``root/splits/`` [``ucfTrainTestlist/``]
  with ``classInd.txt`` ("1 ApplyEyeMakeup"), ``trainlist0N.txt`` ("Class/file.avi 1"), ``testlist0N.txt``
  ("Class/file.avi").
- HMDB51: ``root/videos/<class>/<file>.avi`` [``hmdb51_org/``] and ``root/splits/`` [``testTrainMulti_7030_splits/``]
  with ``<class>_test_splitN.txt`` ("file.avi 1"; 1 = train, 2 = test, 0 = unused).
- Diving48 (V2 labels): ``root/Diving48_V2_train.json`` and ``root/Diving48_V2_test.json`` (lists of
  {"vid_name", "label", ...}), videos ``root/rgb/<vid_name>.mp4``, class names from ``root/Diving48_vocab.json``.

Listed videos are not opened here: a missing or corrupt one is skipped later by the frame cache (and reported).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pmgflow.errors import DataError
from pmgflow.spec.data import DatasetSpec, EmbeddedDatasetSpec

SUBSETS = ("train", "test")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".ogv", ".mpg", ".mpeg", ".gif")
_VIDEO_NAME = re.compile(r"\.(avi|mp4|mkv|webm|mov|ogv|mpg|mpeg|gif)\b", re.IGNORECASE)


@dataclass(frozen=True)
class VideoItem:
    """One labelled video; `group` is its source (UCF101 gNN, HMDB51 movie, Diving48 YouTube id)."""

    path: Path
    label: int
    group: str


@dataclass(frozen=True)
class VideoIndex:
    """The videos of one subset and the class names (label i is classes[i])."""

    items: list[VideoItem]
    classes: list[str]


def _check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")


def _find_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of `names` that is a directory under root, else a DataError saying what was expected."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root / names[0]}: {what} folder not found (expected one of: {', '.join(names)})")


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def _check_split(split: int, allowed: tuple[int, ...], kind: str) -> None:
    if split not in allowed:
        raise DataError(f"{kind} has splits {', '.join(map(str, allowed))}; got split {split}")


def _ucf_dirs(root: Path) -> tuple[Path, Path]:
    return (
        _find_dir(root, ("videos", "UCF-101"), "UCF101 videos"),
        _find_dir(root, ("splits", "ucfTrainTestlist"), "UCF101 splits"),
    )


def ucf101_index(root: str | Path, split: int, subset: str) -> VideoIndex:
    """Index UCF101 (or any set in its layout, like the embedded sets): one official split's subset."""
    _check_subset(subset)
    _check_split(split, (1, 2, 3), "UCF101")
    root = Path(root)
    videos, splits = _ucf_dirs(root)
    classes, by_name = [], {}
    for line in _read_lines(splits / "classInd.txt", "class list (lines like '1 ApplyEyeMakeup')"):
        number, name = line.split(maxsplit=1)
        classes.append(name)
        by_name[name.lower()] = int(number) - 1
    if sorted(by_name.values()) != list(range(len(classes))):
        raise DataError(f"{splits / 'classInd.txt'}: class numbers must run from 1 to {len(classes)}")
    list_file = splits / f"{subset}list0{split}.txt"
    items = []
    for line in _read_lines(list_file, f"{subset} split list (lines like 'Class/v_Class_g01_c01.avi')"):
        rel = line.split()[0]
        class_name = rel.split("/")[0]
        if class_name.lower() not in by_name:
            raise DataError(f"{list_file}: class {class_name!r} of {rel!r} is not in classInd.txt")
        match = re.search(r"_g(\d+)_c\d+", rel)
        group = f"g{int(match.group(1)):02d}" if match else Path(rel).stem
        items.append(VideoItem(videos / rel, by_name[class_name.lower()], group))
    return _nonempty(VideoIndex(items, classes), list_file)


def _hmdb_dirs(root: Path) -> tuple[Path, Path]:
    return (
        _find_dir(root, ("videos", "hmdb51_org"), "HMDB51 videos"),
        _find_dir(root, ("splits", "testTrainMulti_7030_splits"), "HMDB51 splits"),
    )


def hmdb51_index(root: str | Path, split: int, subset: str) -> VideoIndex:
    """Index HMDB51: one official split's subset (split files mark each video 1 = train, 2 = test, 0 = unused)."""
    _check_subset(subset)
    _check_split(split, (1, 2, 3), "HMDB51")
    root = Path(root)
    videos, splits = _hmdb_dirs(root)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in splits.iterdir() if p.name.endswith(suffix))
    if not files:
        raise DataError(f"{splits}: no split files '<class>{suffix}' found")
    classes = [p.name[: -len(suffix)] for p in files]
    wanted = "1" if subset == "train" else "2"
    items = []
    for label, (name, file) in enumerate(zip(classes, files)):
        for line in _read_lines(file, "split file"):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{file}: expected lines like 'file.avi 1' (0, 1 or 2), got {line!r}")
            if parts[1] == wanted:
                items.append(VideoItem(videos / name / parts[0], label, Path(parts[0]).stem.rsplit("_", 1)[0]))
    return _nonempty(VideoIndex(items, classes), splits)


_DIVING_JSON = {"train": "Diving48_V2_train.json", "test": "Diving48_V2_test.json"}


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def diving48_index(root: str | Path, split: int, subset: str) -> VideoIndex:
    """Index Diving48 (V2 labels; one split): videos root/rgb/<vid_name>.mp4."""
    _check_subset(subset)
    _check_split(split, (1,), "Diving48")
    root = Path(root)
    videos = _find_dir(root, ("rgb",), "Diving48 videos")
    json_file = root / _DIVING_JSON[subset]
    entries = _read_json(json_file, f"Diving48 {subset} labels (a list of {{'vid_name', 'label', ...}})")
    try:
        pairs = [(str(e["vid_name"]), int(e["label"])) for e in entries]
    except (TypeError, KeyError, ValueError):
        raise DataError(f"{json_file}: expected a list of objects with 'vid_name' and 'label'") from None
    vocab_file = root / "Diving48_vocab.json"
    if vocab_file.is_file():
        vocab = _read_json(vocab_file, "vocabulary (a list of class names or of lists of words)")
        classes = [" ".join(map(str, c)) if isinstance(c, list) else str(c) for c in vocab]
    else:  # without the vocabulary, both subsets still give the same class count
        labels = [label for _, label in pairs]
        other = root / _DIVING_JSON["test" if subset == "train" else "train"]
        if other.is_file():
            labels += [int(e["label"]) for e in _read_json(other, "labels")]
        classes = [str(i) for i in range(max(labels, default=-1) + 1)]
    bad = [name for name, label in pairs if not 0 <= label < len(classes)]
    if bad:
        raise DataError(f"{json_file}: label out of range 0..{len(classes) - 1} for {bad[0]!r} ({len(bad)} videos)")
    items = [VideoItem(videos / f"{name}.mp4", label, name.rsplit("_", 1)[0]) for name, label in pairs]
    return _nonempty(VideoIndex(items, classes), json_file)


def _nonempty(index: VideoIndex, source: Path) -> VideoIndex:
    if not index.items:
        raise DataError(f"{source}: no videos listed")
    return index


_INDEXERS: dict[str, Callable[[Path, int, str], VideoIndex]] = {
    "ucf101": ucf101_index,
    "hmdb51": hmdb51_index,
    "diving48": diving48_index,
}


def dataset_root(spec: DatasetSpec) -> Path:
    """Where a dataset lives on disk; an embedded set (actions, motions) is rendered there first if needed."""
    if isinstance(spec, EmbeddedDatasetSpec):
        from pmgflow.data.embedded import ensure_embedded_dataset

        return ensure_embedded_dataset(spec)
    return Path(spec.root)


def _layout(spec: DatasetSpec) -> tuple[str, int]:
    """(layout kind, split): the embedded sets are in the UCF101 layout with one split."""
    return ("ucf101", 1) if isinstance(spec, EmbeddedDatasetSpec) else (spec.kind, spec.split)


def index_dataset(spec: DatasetSpec, subset: str) -> VideoIndex:
    """Index the `subset` ("train" or "test") of the dataset a spec describes."""
    kind, split = _layout(spec)
    return _INDEXERS[kind](dataset_root(spec), split, subset)


@dataclass
class DatasetReport:
    """What `pmgflow data check` prints: videos per class per subset and the files that cannot be read."""

    root: Path
    kind: str
    split: int
    classes: list[str]
    counts: dict[str, list[int]]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every listed video could be read."""
        return not self.unreadable

    def format(self) -> str:
        """A plain-text table: one line per class with its train and test counts, then the unreadable files."""
        width = max(len(c) for c in self.classes)
        lines = [f"{self.kind} split {self.split} at {self.root}: {len(self.classes)} classes"]
        lines.append(f"  {'class'.ljust(width)}  " + "  ".join(f"{s:>6}" for s in self.counts))
        for i, name in enumerate(self.classes):
            lines.append(f"  {name.ljust(width)}  " + "  ".join(f"{c[i]:>6}" for c in self.counts.values()))
        lines.append(f"  {'total'.ljust(width)}  " + "  ".join(f"{sum(c):>6}" for c in self.counts.values()))
        lines.append(f"{len(self.unreadable)} unreadable video(s)")
        lines += [f"  {path}: {reason}" for path, reason in self.unreadable]
        return "\n".join(lines)


def check_dataset(
    spec: DatasetSpec, *, full: bool = False, progress: Callable[[int, int], None] | None = None
) -> DatasetReport:
    """Index both subsets and open every video (decode it whole when `full`), listing those that fail."""
    from pmgflow.data.decode import read_video, video_info

    kind, split = _layout(spec)
    indexes = {subset: index_dataset(spec, subset) for subset in SUBSETS}
    classes = indexes["train"].classes
    counts = {s: [sum(1 for it in ix.items if it.label == c) for c in range(len(classes))] for s, ix in indexes.items()}
    report = DatasetReport(dataset_root(spec), kind, split, classes, counts)
    items = [it for ix in indexes.values() for it in ix.items]
    for done, item in enumerate(items, 1):
        try:
            read_video(item.path) if full else video_info(item.path)
        except DataError as exc:
            report.unreadable.append((item.path, str(exc).removeprefix(f"{item.path}: ")))
        if progress:
            progress(done, len(items))
    return report


@dataclass
class PrepareResult:
    """Outcome of :func:`prepare_dataset`: files transcoded now, reused from an earlier run, and unreadable."""

    root: Path
    written: int
    reused: int
    unreadable: list[tuple[Path, str]]


def _copy_split_file(src: Path, dst: Path) -> None:
    """Copy a split list, renaming every listed video to .mp4 (JSON names carry no extension: copied as is)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".json":
        shutil.copyfile(src, dst)
    else:
        dst.write_text(_VIDEO_NAME.sub(".mp4", src.read_text(errors="replace")))


def prepare_dataset(
    spec: DatasetSpec,
    out_root: str | Path,
    short_side: int,
    *,
    keyframe_interval: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Transcode a dataset once to h264 mp4 at `short_side`, in the same layout; reruns reuse finished files.

    The copy is then used like the original (same kind, root = out_root) and decodes faster and smaller; a
    keyframe every `keyframe_interval` frames makes a streamed clip decode at most that many frames before its
    first one (bench/data_throughput.py measures the gain).
    """
    from pmgflow.data.decode import read_video, video_info, write_video

    kind, _ = _layout(spec)
    root, out_root = dataset_root(spec), Path(out_root)
    if root.resolve() == out_root.resolve():
        raise DataError(f"{out_root}: the output must differ from the dataset root")
    if kind == "ucf101":
        (videos, splits), out_videos = _ucf_dirs(root), out_root / "videos"
        split_files = [(p, out_root / "splits" / p.name) for p in sorted(splits.glob("*.txt"))]
    elif kind == "hmdb51":
        (videos, splits), out_videos = _hmdb_dirs(root), out_root / "videos"
        split_files = [(p, out_root / "splits" / p.name) for p in sorted(splits.glob("*.txt"))]
    else:
        videos, out_videos = _find_dir(root, ("rgb",), "Diving48 videos"), out_root / "rgb"
        split_files = [(p, out_root / p.name) for p in sorted(root.glob("Diving48*.json"))]
    sources = sorted(p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not sources:
        raise DataError(f"{videos}: no video files found")
    result = PrepareResult(out_root, 0, 0, [])
    for done, src in enumerate(sources, 1):
        dst = out_videos / src.relative_to(videos).with_suffix(".mp4")
        if dst.is_file():
            result.reused += 1
        else:
            try:
                frames = read_video(src, size=short_side)
                fps = video_info(src).fps or 25.0
                write_video(dst, frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2], fps=fps,
                            keyframe_interval=keyframe_interval)
                result.written += 1
            except DataError as exc:
                result.unreadable.append((src, str(exc).removeprefix(f"{src}: ")))
        if progress:
            progress(done, len(sources))
    for src, dst in split_files:
        _copy_split_file(src, dst)
    return result
