"""Shims that let RecBole 1.2.1 run on numpy 2.4, pandas 3, torch 2.13 and setuptools 84.

RecBole 1.2.1 (2023) predates all four. Each fix below is one small function with the
reason next to it; `apply()` runs them all, idempotently, and must be called before
anything under `recbole` is imported (the numpy and ray fixes act at import time).
The breakages are listed in ../shared/ENVIRONMENT.md; fix 5 (pandas `Series.agg(len)`)
was found here, on the path that loads pre-split files with item-list columns.

Known and left alone (not on our path): pandas-3 chained `fillna(inplace=True)` in
`Dataset._load_feat` for *empty* sequence cells (our writer never writes one), and the
same `.agg(len)` pattern in float-sequence normalisation/discretisation and the KG dataset.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

_APPLIED: set[str] = set()


def _once(name: str) -> bool:
    """True the first time `name` is seen, so every shim is idempotent."""
    if name in _APPLIED:
        return False
    _APPLIED.add(name)
    return True


def alias_removed_numpy_names() -> None:
    """Fix 2: numpy 2 removed `np.float_`, `np.complex_`, `np.unicode_` and `np.bool8`.

    RecBole's `Config.compatibility_settings` reads the first three to re-create the
    even older `np.float`/`np.complex`/`np.unicode` aliases it uses elsewhere (e.g. the
    evaluator's `np.float`); ray 2.6 reads `np.bool8` at import time.
    """
    import numpy as np

    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_),
                     ("bool8", np.bool_)):
        if old not in np.__dict__:
            setattr(np, old, new)


class _UnavailableTune(types.ModuleType):
    """Stands in for `ray.tune`: importable, fails clearly only when actually used."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"ray.tune.{name}: ray is stubbed by methods.recbole_compat (RecBole's hyper-parameter "
            "search is not supported here); install a ray that works with numpy 2 to use it"
        )


def stub_ray_when_unusable() -> None:
    """Fix 1: `recbole.quick_start` imports `ray.tune` at top level.

    RecBole pins ray<=2.6.3, which needs `pkg_resources` (gone in setuptools 84) and
    `np.bool8` (gone in numpy 2). Ray only serves hyper-parameter search, which we do
    not use, so when ray is absent or fails to import we register a stub instead.
    """
    if not _once("ray") or "ray" in sys.modules:
        return
    if importlib.util.find_spec("ray") is not None:
        try:
            import ray.tune  # noqa: F401
            return
        except Exception:  # a broken ray install: fall through to the stub
            for name in [n for n in sys.modules if n == "ray" or n.startswith("ray.")]:
                del sys.modules[name]
    ray = types.ModuleType("ray")
    tune = _UnavailableTune("ray.tune")
    ray.tune = tune  # type: ignore[attr-defined]
    ray.__dict__["__recbench_stub__"] = True
    sys.modules["ray"] = ray
    sys.modules["ray.tune"] = tune


class _TrustedCheckpointTorch(types.ModuleType):
    """`torch` as seen by recbole.trainer.trainer, with `load` defaulting to weights_only=False."""

    def __init__(self, torch_module: types.ModuleType) -> None:
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def load(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return self._torch.load(*args, **kwargs)


def trust_own_checkpoints() -> None:
    """Fix 3: torch >= 2.6 loads weights-only by default, and RecBole checkpoints pickle a Config.

    Only `Trainer.evaluate(load_best_model=True)` and `Trainer.resume_checkpoint` call
    `torch.load`, on files the trainer itself wrote under our work dir, so the trainer
    module (and nothing else) gets a `torch` whose `load` is not weights-only.
    """
    import recbole.trainer.trainer as trainer_module

    if not isinstance(trainer_module.torch, _TrustedCheckpointTorch):
        trainer_module.torch = _TrustedCheckpointTorch(trainer_module.torch)


def _fill_nan(self: Any) -> None:
    """RecBole 1.2.1's `Dataset._fill_nan`, assigning the filled column back (pandas 3)."""
    import numpy as np
    from recbole.utils.enum_type import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(lambda x, d=dtype: np.array([], dtype=d) if isinstance(x, float) else x)


def fill_nan_by_assignment() -> None:
    """Fix 4: under pandas 3 (copy-on-write) `feat[field].fillna(..., inplace=True)` fills a
    temporary copy, so NaNs silently survive in feature columns. Assign the result back."""
    from recbole.data.dataset import Dataset

    Dataset._fill_nan = _fill_nan


def _remap(self: Any, remap_list: list) -> None:
    """RecBole 1.2.1's `Dataset._remap` with per-row sequence lengths (`map(len)`)."""
    import numpy as np
    import pandas as pd
    from recbole.utils.enum_type import FeatureType

    if len(remap_list) == 0:
        return
    tokens, split_point = self._concat_remaped_tokens(remap_list)
    new_ids_list, mp = pd.factorize(tokens)
    new_ids_list = np.split(new_ids_list + 1, split_point)
    mp = np.array(["[PAD]"] + list(mp))
    token_id = {t: i for i, t in enumerate(mp)}
    for (feat, field, ftype), new_ids in zip(remap_list, new_ids_list):
        if field not in self.field2id_token:
            self.field2id_token[field] = mp
            self.field2token_id[field] = token_id
        if ftype == FeatureType.TOKEN:
            feat[field] = new_ids
        elif ftype == FeatureType.TOKEN_SEQ:
            split_point = np.cumsum(feat[field].map(len).to_numpy())[:-1]
            feat[field] = np.split(new_ids, split_point)


def _benchmark_presets(self: Any) -> None:
    """RecBole 1.2.1's `SequentialDataset._benchmark_presets` with per-row lengths (`map(len)`)."""
    from recbole.utils.enum_type import FeatureSource, FeatureType

    list_suffix = self.config["LIST_SUFFIX"]
    for field in self.inter_feat:
        if field + list_suffix in self.inter_feat:
            setattr(self, f"{field}_list_field", field + list_suffix)
    self.set_field_property(self.item_list_length_field, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
    self.inter_feat[self.item_list_length_field] = self.inter_feat[self.item_id_list_field].map(len)


def sequence_lengths_per_row() -> None:
    """Fix 5: pandas 3 `Series.agg(len)` returns the Series length, no longer each row's.

    RecBole uses it to split remapped token sequences back into rows (`_remap`) and to
    compute `item_length` for pre-split sequential files (`_benchmark_presets`); both
    silently produce wrong data. Use `Series.map(len)` there.
    """
    from recbole.data.dataset import Dataset, SequentialDataset

    Dataset._remap = _remap
    SequentialDataset._benchmark_presets = _benchmark_presets


def keep_anomaly_detection_off() -> None:
    """Fix 6: `recbole/model/sequential_recommender/sine.py` calls
    `torch.autograd.set_detect_anomaly(True)` at import time, and importing any sequential
    model imports it. Anomaly mode NaN-checks every backward output: measured here it made
    one SASRec batch (256 x 50, 12k items) take 1.5 s instead of 0.6 s on one CPU thread.
    Import the package now and switch the mode back off for the whole process.
    """
    if not _once("anomaly"):
        return
    import recbole.model.sequential_recommender  # noqa: F401  (runs sine.py's global switch)
    import torch

    torch.autograd.set_detect_anomaly(False)


def apply() -> None:
    """Apply every shim (idempotent). Call before importing anything from `recbole`."""
    alias_removed_numpy_names()
    stub_ray_when_unusable()
    trust_own_checkpoints()
    fill_nan_by_assignment()
    sequence_lengths_per_row()
    keep_anomaly_detection_off()
