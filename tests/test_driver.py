"""The driver: chunking does not change draws; an interrupted run resumes exactly."""

import numpy as np
import pytest

import helmholtz
from helmholtz import driver

SETTINGS = dict(num_warmup=100, num_samples=100, num_chains=2)


def test_chunked_run_equals_one_scan():
    one = helmholtz.infer("linear_gaussian", "nuts", seed=5, **SETTINGS)
    chunked = helmholtz.infer("linear_gaussian", "nuts", seed=5, progress_bar=True, **SETTINGS)
    np.testing.assert_array_equal(one.samples["w"], chunked.samples["w"])


def test_interrupted_run_resumes_to_the_same_draws(tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    full = helmholtz.infer("linear_gaussian", "nuts", seed=6, progress_bar=True, **SETTINGS)

    calls = {"n": 0}
    real_run = driver.Timer.run

    def dying_run(self, fn, *args):
        calls["n"] += 1
        if calls["n"] == 30:  # 1 init + 20 warmup chunks, then part-way through sampling
            raise KeyboardInterrupt
        return real_run(self, fn, *args)

    monkeypatch.setattr(driver.Timer, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        helmholtz.infer("linear_gaussian", "nuts", seed=6, checkpoint=str(ckpt), **SETTINGS)
    monkeypatch.setattr(driver.Timer, "run", real_run)
    assert (tmp_path / "run.ckpt.warmup").exists() and (tmp_path / "run.ckpt.sample").exists()

    resumed = helmholtz.infer("linear_gaussian", "nuts", seed=6, checkpoint=str(ckpt),
                              **SETTINGS)
    np.testing.assert_array_equal(full.samples["w"], resumed.samples["w"])
    np.testing.assert_array_equal(full.stats["n_steps"], resumed.stats["n_steps"])

    with pytest.raises(ValueError, match="written by a different run"):
        helmholtz.infer("linear_gaussian", "nuts", seed=7, checkpoint=str(ckpt), **SETTINGS)
