"""Each RecBole compatibility shim does its one job (numpy 2, pandas 3, torch 2.6+, no ray)."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from methods import recbole_compat

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def shims() -> None:
    recbole_compat.apply()
    recbole_compat.apply()  # idempotent


def test_numpy_aliases_that_recbole_config_reads() -> None:
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    assert np.bool8 is np.bool_
    from recbole.config import Config

    Config.compatibility_settings(None)  # reads np.float_ etc.; raised AttributeError on numpy 2


def test_recbole_quick_start_imports_with_a_broken_ray(tmp_path: Path) -> None:
    # A ray that fails on import the way ray 2.6.3 does on setuptools 84.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("import pkg_resources_gone_in_setuptools_84\n")
    script = textwrap.dedent(
        """
        import sys
        from methods import recbole_compat
        recbole_compat.apply()
        import recbole.quick_start
        from ray import tune
        try:
            tune.run
        except RuntimeError as error:
            print("stubbed:", "hyper-parameter search" in str(error))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stubbed: True" in result.stdout


class Pickled:
    """A non-tensor object, like the Config RecBole pickles into its checkpoints."""

    def __init__(self) -> None:
        self.value = 3


def test_trainer_loads_its_own_pickled_checkpoints(tmp_path: Path) -> None:
    import recbole.trainer.trainer as trainer_module

    path = tmp_path / "checkpoint.pth"
    torch.save({"config": Pickled(), "state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # torch >= 2.6: weights only by default
    loaded = trainer_module.torch.load(path, map_location="cpu")
    assert loaded["config"].value == 3
    assert trainer_module.torch.no_grad is torch.no_grad  # everything else is plain torch
    assert torch.load is not trainer_module.torch.load  # and global torch is untouched


def test_fill_nan_really_fills_float_and_sequence_fields() -> None:
    from recbole.data.dataset import Dataset
    from recbole.utils.enum_type import FeatureType

    feat = pd.DataFrame({"price": [1.0, np.nan, 3.0], "tags": [np.array([1, 2]), np.nan, np.array([3])]})
    fake = SimpleNamespace(feat_name_list=["item_feat"], item_feat=feat, logger=logging.getLogger("test"),
                           field2type={"price": FeatureType.FLOAT, "tags": FeatureType.TOKEN_SEQ})
    Dataset._fill_nan(fake)
    assert fake.item_feat["price"].tolist() == [1.0, 2.0, 3.0]
    assert [len(x) for x in fake.item_feat["tags"]] == [2, 0, 1]


def test_remap_splits_token_sequences_per_row() -> None:
    from recbole.data.dataset import Dataset
    from recbole.utils.enum_type import FeatureType

    inter = pd.DataFrame({"item_id": ["b", "c"], "item_id_list": [np.array(["a", "b", "c"]), np.array(["a"])]})
    fake = SimpleNamespace(field2id_token={}, field2token_id={})
    fake._concat_remaped_tokens = lambda remap_list: Dataset._concat_remaped_tokens(fake, remap_list)
    Dataset._remap(fake, [(inter, "item_id", FeatureType.TOKEN), (inter, "item_id_list", FeatureType.TOKEN_SEQ)])
    tokens = fake.field2id_token["item_id"]
    assert [tokens[i] for i in inter["item_id"]] == ["b", "c"]
    assert [[tokens[i] for i in row] for row in inter["item_id_list"]] == [["a", "b", "c"], ["a"]]


def test_benchmark_presets_count_items_per_row() -> None:
    from recbole.data.dataset import SequentialDataset

    inter = pd.DataFrame({"user_id": [1, 2], "item_id": [5, 6],
                          "item_id_list": [np.array([1, 2, 3]), np.array([4])]})
    fake = SimpleNamespace(config={"LIST_SUFFIX": "_list"}, inter_feat=inter, item_list_length_field="item_length",
                           set_field_property=lambda *args: None)
    SequentialDataset._benchmark_presets(fake)
    assert fake.item_id_list_field == "item_id_list"
    assert fake.inter_feat["item_length"].tolist() == [3, 1]


def test_importing_recbole_models_leaves_anomaly_detection_off():
    """RecBole's SINE module switches autograd anomaly mode on globally (a 2x slowdown)."""
    import torch

    from methods import recbole_compat

    recbole_compat.apply()
    from recbole.model.sequential_recommender import SASRec  # noqa: F401

    assert not torch.is_anomaly_enabled()
