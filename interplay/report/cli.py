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

HELP = "quality report of a corpus (distinct-n, self-BLEU, Recall@k, leakage, ...); two corpora side by side"

COLUMNS = ["turns", "outcome", "accepted_item_id", "recommended_item_ids", "target_item_id", "target_attributes",
           "user_model"]
BATCH_ROWS = 2048


def corpus_mode(manifest: dict[str, Any], first_row: dict[str, Any] | None) -> str:
    """How the corpus was made: the manifest says so for the baseline; older corpora are interplay ones."""
    if manifest.get("mode"):
        return str(manifest["mode"])
    model = (first_row or {}).get("user_model") or ""
    return model.split(":", 1)[0] if model.startswith("single-llm:") else "interplay"


def iter_rows(out_dir: str | Path, columns: list[str] = COLUMNS) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    from interplay.generator.output.writer import shard_files

    for path in shard_files(out_dir):
        f = pq.ParquetFile(path)
        try:
            for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield from batch.to_pylist()
        finally:
            f.close()


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


def analyse(out_dir: str | Path, *, catalog: str | None = None, sample_size: int = 500, seed: int = 0,
            label: str | None = None) -> dict[str, Any]:
    """Every figure of one corpus: {"label", "path", "mode", "metrics", "distributions"}."""
    from interplay.generator.output.writer import OutputError, read_manifest
    from interplay.report.metrics import CorpusMetrics

    manifest = read_manifest(out_dir)
    partitions = sorted(Path(out_dir).glob("manifest-*.json")) if manifest is None else []
    if partitions:  # a partitioned run: one manifest per partition, all with the same config
        manifest = json.loads(partitions[0].read_text())
    if manifest is None:
        raise OutputError(f"{out_dir} holds no manifest.json: not an interplay output directory")
    items = load_items(catalog_path(manifest, catalog))
    metrics = CorpusMetrics(items=items, sample_size=sample_size, seed=seed)
    first = None
    for row in iter_rows(out_dir):
        first = first or row
        metrics.add(row)
    if metrics.num_dialogues == 0:
        raise OutputError(f"{out_dir} holds no finished shard yet: nothing to report")
    return {"label": label or Path(out_dir).resolve().name, "path": str(out_dir),
            "mode": corpus_mode(manifest, first), "metrics": metrics.result(),
            "distributions": metrics.distributions()}


def write_report(corpora: list[dict[str, Any]], out: Path, *, plots: bool = True) -> list[Path]:
    from interplay.report.render import markdown

    out.mkdir(parents=True, exist_ok=True)
    files = []
    if plots:
        from interplay.report.plots import plot_all

        files = plot_all(corpora, out)
    (out / "report.md").write_text(markdown(corpora, [f.name for f in files]))
    payload = {"corpora": [{k: c[k] for k in ("label", "path", "mode", "metrics")} for c in corpora]}
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    return [out / "report.md", out / "report.json", *files]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpora", nargs="+", metavar="DIR", help="output directories of runs (two: side by side)")
    parser.add_argument("--output", help="where report.md, report.json and the plots go "
                                         "(default: DIR/report, or DIR/compare-<DIR2 name> for several)")
    parser.add_argument("--catalog", help="catalog file for the match score (default: the one the run used)")
    parser.add_argument("--sample", type=int, default=500, help="utterances per role for self-BLEU (default 500)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG files")


def main(args: argparse.Namespace) -> int:
    from interplay.report.render import text_table

    labels = [Path(d).resolve().name for d in args.corpora]
    if len(set(labels)) < len(labels):  # out/a/corpus vs out/b/corpus: tell them apart by their parent too
        labels = [f"{Path(d).resolve().parent.name}/{Path(d).resolve().name}" for d in args.corpora]
    corpora = [analyse(d, catalog=args.catalog, sample_size=args.sample, label=label)
               for d, label in zip(args.corpora, labels)]
    first = Path(args.corpora[0])
    default = first / "report" if len(corpora) == 1 else first / ("compare-" + "-".join(
        Path(d).resolve().name for d in args.corpora[1:]))
    out = Path(args.output) if args.output else default
    files = write_report(corpora, out, plots=not args.no_plots)
    print(text_table(corpora))
    print(f"\nreport: {', '.join(str(f) for f in files)}", file=sys.stderr)
    return 0
