"""Build (or find) a dataset's TIGER semantic IDs under bench.toml's settings and print the cache file:
scripts/gpu_run.sh carries it to a GPU machine, which has no room for the text encoder.

usage: python scripts/tiger_semantic_ids.py DATASET
"""

from __future__ import annotations

import sys

from bench.config import load_config, method_config
from bench.data.prepare import prepare
from bench.method import RunContext
from bench.runs.setup import run_paths
from methods.tiger.method import TigerMethod


def semantic_ids_file(dataset_name: str) -> str:
    config = load_config()
    paths = run_paths(config)
    dataset, _ = prepare(dataset_name, paths.data_dir, paths.cache_dir)
    method = TigerMethod(method_config(config, "tiger")["tiger"], RunContext(cache_dir=paths.cache_dir))
    method._semantic_ids(dataset)
    return str(paths.cache_dir / "tiger" / "semantic_ids" / method.id_facts["file"])


if __name__ == "__main__":
    print(semantic_ids_file(sys.argv[1]))
