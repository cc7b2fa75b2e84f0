"""`interplay report DIR [DIR2 ...]`: quality report of one corpus, or several side by side.

    interplay report out/embedded                        # -> out/embedded/report/{report.md,report.json,*.png}
    interplay report out/embedded out/baseline           # side by side -> out/embedded/compare-baseline/

The table is printed; report.md, report.json and the PNG plots are written to --output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HELP = ("quality report of a corpus (success, match score, Recall@k, leakage, distinct-n, duplicates, ...); "
        "several side by side")

# `protocol` (and the turns' `candidate_item_ids`) only exist in newer corpora: columns a shard lacks are skipped.
COLUMNS = ["conversation_id", "turns", "outcome", "accepted_item_id", "recommended_item_ids", "target_item_id",
           "target_attributes", "user_model", "protocol"]
BATCH_ROWS = 2048


def corpus_mode(manifest: dict[str, Any], first_row: dict[str, Any] | None) -> str:
    """How the corpus was made: the manifest says so for the baseline; older corpora are interplay ones."""
    if manifest.get("mode"):
        return str(manifest["mode"])
    model = (first_row or {}).get("user_model") or ""
    return model.split(":", 1)[0] if model.startswith("single-llm:") else "interplay"


def iter_rows(out_dir: str | Path, columns: list[str] = COLUMNS) -> Iterator[dict[str, Any]]:
    from interplay.generator.output.writer import as_storage, shard_names

    storage = as_storage(out_dir)
    for name in shard_names(storage):
        f = storage.open_parquet(name)
        try:
            present = set(f.schema_arrow.names)
            for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in columns if c in present]):
                yield from batch.to_pylist()
        finally:
            f.close()


def short_name(location: str | Path, *, parent: bool = False) -> str:
    """The corpus's folder name (or its parent's), for a local path or a URI."""
    if "://" in str(location):
        parts = str(location).split("://", 1)[1].rstrip("/").split("/")
        return parts[-2] if parent and len(parts) > 1 else parts[-1]
    path = Path(location).resolve()
    return path.parent.name if parent else path.name


def catalog_path(manifest: dict[str, Any], override: str | None) -> Path | None:
    if override:
        return Path(override).expanduser()
    recorded = (manifest.get("catalog") or {}).get("path")  # the file the run itself used
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    seeds = (manifest.get("config") or {}).get("seeds") or {}
    if seeds.get("source") == "file" and seeds.get("catalog"):
        return Path(seeds["catalog"]).expanduser()
    from interplay.prepare import default_movielens_dir

    built = sorted(default_movielens_dir().glob("build-*/catalog.parquet"))  # same movies in every build
    return built[0] if built else None


def load_items(path: Path | None) -> dict[str, tuple[str, dict[str, list[str]]]] | None:
    if path is None:
        return None
    from interplay.generator.inputs.catalog import Catalog

    return {item.item_id: (item.title, item.attributes) for item in Catalog.load(path)}


def analyse(out_dirs: list[str | Path], *, catalog: str | None = None, sample_size: int = 500,
            distinct_sample: int = 10_000, near_sample: int | None = None, seed: int = 0,
            labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Every figure of each corpus: [{"label", "path", "mode", "metrics", "distributions"}]. Corpora read
    together are measured on text samples of equal size (metrics.compare)."""
    from interplay.report.duplicates import NEAR_SAMPLE
    from interplay.report.metrics import CorpusMetrics, compare

    read = []
    for k, out_dir in enumerate(out_dirs):
        manifest = _manifest(out_dir)
        items = load_items(catalog_path(manifest, catalog))
        metrics = CorpusMetrics(items=items, sample_size=sample_size, distinct_sample=distinct_sample, seed=seed,
                                near_sample=near_sample or NEAR_SAMPLE)
        first = None
        for row in iter_rows(out_dir):
            first = first or row
            metrics.add(row)
        if metrics.num_dialogues == 0:
            from interplay.generator.output.writer import OutputError

            raise OutputError(f"{out_dir} holds no finished shard yet: nothing to report")
        label = labels[k] if labels else short_name(out_dir)
        read.append(({"label": label, "path": str(out_dir), "mode": corpus_mode(manifest, first),
                      "distributions": metrics.distributions()}, metrics))
    return [{**corpus, "metrics": result} for (corpus, _), result in zip(read, compare([m for _, m in read]))]


def _manifest(out_dir: str | Path) -> dict[str, Any]:
    """The run's manifest; a partitioned run's first partition manifest (all hold the same config)."""
    from interplay.generator.output.writer import PARTITION_MANIFEST_RE, OutputError, as_storage, read_manifest

    storage = as_storage(out_dir)
    manifest = read_manifest(storage)
    partitions = [n for n in storage.names() if PARTITION_MANIFEST_RE.match(n)] if manifest is None else []
    if partitions:  # a partitioned run: one manifest per partition, all with the same config
        manifest = read_manifest(storage, partitions[0])
    if manifest is None:
        raise OutputError(f"{out_dir} holds no manifest.json: not an interplay output directory")
    return manifest


def write_report(corpora: list[dict[str, Any]], out: Path, *, plots: bool = True) -> list[Path]:
    from interplay.report.render import markdown

    out.mkdir(parents=True, exist_ok=True)
    files = []
    if plots:
        from interplay.report.plots import plot_all

        files = plot_all(corpora, out)
    (out / "report.md").write_text(markdown(corpora, [f.name for f in files]))
    from interplay.report.summary import headline_figures

    payload = {"corpora": [{**{k: c[k] for k in ("label", "path", "mode")},
                            "headline": headline_figures(c["metrics"]), "metrics": c["metrics"]} for c in corpora]}
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    return [out / "report.md", out / "report.json", *files]


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpora", nargs="+", metavar="DIR", help="output directories of runs (two: side by side)")
    parser.add_argument("--output", help="where report.md, report.json and the plots go "
                                         "(default: DIR/report, or DIR/compare-<DIR2 name> for several)")
    parser.add_argument("--catalog", help="catalog file for the match score (default: the one the run used)")
    parser.add_argument("--sample", type=_positive, default=500, help="utterances per role for self-BLEU (default 500)")
    parser.add_argument("--distinct-sample", type=_positive, default=10_000,
                        help="at most this many utterances per role for distinct-n; corpora compared are all "
                             "measured on as many as the smallest has (default 10000)")
    parser.add_argument("--near-sample", type=_positive, default=None,
                        help="at most this many dialogues per corpus for the near-duplicate share (MinHash LSH); "
                             "corpora compared are all measured on as many as the smallest has (default 20000)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG files")


def main(args: argparse.Namespace) -> int:
    from interplay.report.render import text_table

    labels = [short_name(d) for d in args.corpora]
    if len(set(labels)) < len(labels):  # out/a/corpus vs out/b/corpus: tell them apart by their parent too
        labels = [f"{short_name(d, parent=True)}/{short_name(d)}" for d in args.corpora]
    corpora = analyse(args.corpora, catalog=args.catalog, sample_size=args.sample,
                      distinct_sample=args.distinct_sample, near_sample=args.near_sample, labels=labels)
    leaf = "report" if len(corpora) == 1 else "compare-" + "-".join(short_name(d) for d in args.corpora[1:])
    # Beside a local corpus; in the working directory for one behind a URI (the report is local files).
    first = args.corpora[0]
    default = Path(f"{leaf}-{short_name(first)}") if "://" in first else Path(first) / leaf
    out = Path(args.output) if args.output else default
    files = write_report(corpora, out, plots=not args.no_plots)
    if len(corpora) == 1 and "://" not in first and out.resolve() == (Path(first) / leaf).resolve():
        from interplay.generator.output.card import refresh_card

        refresh_card(first)  # the corpus's dataset card carries the figures it now has
    print(text_table(corpora))
    print(f"\nreport: {', '.join(str(f) for f in files)}", file=sys.stderr)
    return 0
