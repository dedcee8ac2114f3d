"""The label-dropout probability of notebooks/guidance.md, section 4, measured.

    python benchmarks/label_dropout.py      # about 3 minutes on 2 cores

For p_drop in {0.1, 0.2, 0.3} and two training seeds, the chapter's class-conditional network
(MLP 64-64, label embedding with a null label, 4000 steps of ``losses.cfg_dsm_loss`` at batch
512 on 50,000 labelled draws of the nine Gaussians) is sampled with Euler-Maruyama (200 steps):
the four classes of the chapter at w = 0 (variance ratio about the true mean, n = 2000; the
chapter asks for [0.9, 1.1]) and the null label alone (variance ratio and mode TV, n = 5000).
Larger p_drop trains the null label on more batches and the labels on fewer.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from diffnb import cfg, data, metrics, samplers
from diffnb.sde import VPSDE

MIXTURE, SDE = data.nine_gaussians(), VPSDE()
CLASSES = {"centre": 4, "edge": 1, "corner": 0, "rarest": 8}
P_DROPS, SEEDS = (0.1, 0.2, 0.3), (0, 1)


def scores(key: jax.Array, apply, params) -> tuple[list[float], float, float]:
    """Class variance ratios at w = 0, and the null label's variance ratio and mode TV."""

    def with_label(label):
        return lambda x, t: apply(params, None, x, t, jnp.full(x.shape[:1], label, jnp.int32))

    key_classes, key_null = jax.random.split(key)
    ratios = []
    for key_c, label in zip(jax.random.split(key_classes, len(CLASSES)), CLASSES.values(),
                            strict=True):  # fmt: skip
        x = samplers.euler_maruyama(key_c, with_label(label), SDE, 2000, num_steps=200).samples
        ratios.append(float(jnp.mean(jnp.sum((x - MIXTURE.means[label]) ** 2, -1)) * 16 / 2))
    x = samplers.euler_maruyama(key_null, with_label(9), SDE, 5000, num_steps=200).samples
    return ratios, float(metrics.variance_ratio(x, MIXTURE)), float(metrics.mode_tv(x, MIXTURE))


def main() -> None:
    print(f"| p_drop | seed | class ratios at w = 0 ({', '.join(CLASSES)}) | max |r − 1| "
          "| null label: var. ratio | mode TV | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for p_drop in P_DROPS:
        for seed in SEEDS:
            start = time.perf_counter()
            key_train, key_sample = jax.random.split(jax.random.fold_in(jax.random.key(7), seed))
            model = cfg.train_cfg(key_train, MIXTURE, p_drop, sde=SDE)
            ratios, null_ratio, null_tv = scores(key_sample, model.apply, model.params)
            worst = np.max(np.abs(np.array(ratios) - 1))
            print(f"| {p_drop} | {seed} | {', '.join(f'{r:.3f}' for r in ratios)} | {worst:.3f} "
                  f"| {null_ratio:.3f} | {null_tv:.3f} | {time.perf_counter() - start:.0f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
