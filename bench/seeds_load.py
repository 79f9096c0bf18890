"""How long the seeds take to load and validate, against parsing the same files with no validation.

Run: ``python bench/seeds_load.py``.  Prints milliseconds per full load and the ratio to the baseline
(libyaml parse only, same run), so the figure survives a noisy shared machine.
"""

from __future__ import annotations

import time

import yaml

from seeds.loader import SEEDS_DIR, load_seeds

ROUNDS = 30


def _per_round(fn: object) -> float:
    assert callable(fn)
    fn()
    start = time.perf_counter()
    for _ in range(ROUNDS):
        fn()
    return (time.perf_counter() - start) / ROUNDS * 1000


def main() -> None:
    files = sorted(SEEDS_DIR.glob("*.yaml"))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def parse_only() -> None:
        for path in files:
            yaml.load(path.read_text(encoding="utf-8"), Loader=loader)

    baseline = _per_round(parse_only)
    full = _per_round(load_seeds)
    clauses = len(load_seeds().clauses)
    print(f"seeds: {len(files)} files, {clauses} clauses")
    print(f"parse only (baseline): {baseline:.1f} ms")
    print(f"load_seeds (parse + validate): {full:.1f} ms  ratio {full / baseline:.2f}x")


if __name__ == "__main__":
    main()
