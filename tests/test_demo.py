# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import json
import math

import numpy as np
from thermal_block import main

KEYS = {
    "n_ranks", "n_dofs", "n_train", "n_test", "n_modes", "rel_error_l2_mean", "rel_error_l2_max",
    "rel_error_h1_mean", "proj_error_h1_mean", "t_snapshots_s", "t_pod_s", "t_train_s",
    "t_full_solve_median_s", "t_surrogate_median_s", "speedup_median",
}  # fmt: skip


def test_thermal_block_demo_small(comm, tmp_dir):
    summary = main(
        comm, n_cells=12, n_train=24, n_test=6, n_networks=2, hidden_layers=(16, 16), adam_epochs=200,
        lbfgs_iterations=20, out_dir=tmp_dir, progress=False,
    )  # fmt: skip
    written = json.loads((tmp_dir / "summary.json").read_text())
    assert KEYS <= set(written)
    assert written == summary
    assert written["n_ranks"] == comm.size and written["n_dofs"] == 13 * 13
    assert all(math.isfinite(v) for v in written.values())
    assert 0 <= written["proj_error_h1_mean"] <= written["rel_error_h1_mean"] < 0.5
    assert np.isclose(written["speedup_median"], written["t_full_solve_median_s"] / written["t_surrogate_median_s"])
    for name in ("comparison.xdmf", "comparison.h5", "comparison.xdmf.json", "comparison.bp"):
        assert (tmp_dir / name).exists()
