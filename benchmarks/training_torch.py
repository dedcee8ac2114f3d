"""The same score MLP, NCSN loss, AdamW and batch in PyTorch eager mode on the CPU.

The layers mirror ``diffnb.networks._mlp`` (tanh-approximated GELU, as ``jax.nn.gelu``;
LayerNorm eps 1e-5, as Haiku). The learning rate is held at the peak of diffnb's schedule:
a schedule costs one scalar per step and does not change the timing.
"""

from __future__ import annotations

import math
import os
import time


def build_model(config):
    """A ``torch.nn.Module`` computing ``diffnb.networks.score_network(config)``'s raw output.

    Its layers carry Haiku's names (x_in, c_in, hidden.k, norm, out); a torch Linear stores
    the transpose of Haiku's (fan_in, fan_out) weight.
    """
    import torch
    from torch import nn

    e = config.embedding_dim
    half = e // 2
    widths = [e, *config.hidden_dims]

    class ScoreMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.x_in = nn.Linear(config.output_dim, e)
            self.c_in = nn.Linear(e, e)
            self.hidden = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
            self.norm = nn.LayerNorm(widths[-1], eps=1e-5)
            self.out = nn.Linear(widths[-1], config.output_dim)
            freqs = torch.exp(-math.log(config.max_positions) / (half - 1) * torch.arange(half))
            self.register_buffer("freqs", freqs)

        def forward(self, x, c):
            angles = c[:, None] * self.freqs[None, :]
            emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
            h = self.x_in(x) + nn.functional.gelu(self.c_in(emb), approximate="tanh")
            for layer in self.hidden:
                h = nn.functional.gelu(layer(h), approximate="tanh")
            return self.out(self.norm(h))

    return ScoreMLP()


def torch_steps_per_second(
    seed: int, data, sigmas, config, num_steps: int, batch_size: int, repeats: int = 1
) -> float:
    """Best steps/s over ``repeats`` runs of ``num_steps`` eager training steps.

    ``data`` (n, d) and ``sigmas`` (L,) are numpy arrays; ``config`` a ``NetworkConfig``.
    Torch uses as many threads as the process may run on (its CPU affinity).
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x_all = torch.tensor(data, dtype=torch.float32)  # a writable copy
    sig = torch.tensor(sigmas, dtype=torch.float32)
    n = x_all.shape[0]

    def step():
        batch = x_all[torch.randint(0, n, (batch_size,))]
        sigma = sig[torch.randint(0, sig.shape[0], (batch_size,))]
        z = torch.randn_like(batch)
        out = model(batch + sigma[:, None] * z, torch.log(sigma))  # = sigma * score
        loss = 0.5 * ((out + z) ** 2).sum(dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(5):  # warm-up: allocator and AdamW state
        step()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(num_steps):
            loss = step()
        loss.item()  # wait for the last step
        best = min(best, time.perf_counter() - start)
    return num_steps / best
