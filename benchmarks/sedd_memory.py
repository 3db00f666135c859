"""Peak memory and time of SEDD's loss, ELBO and sampler step: trl_ext's lean code vs a dense reference.

    python benchmarks/sedd_memory.py [--lengths 128 1024] [--batch 4]

GPT-2's vocabulary (V = 50257 tokens + mask) with a tiny trunk, so that the vocabulary-sized tensors dominate.
Each measurement runs in a fresh process; "extra peak" is the growth of the process's peak resident memory during
the operation (model, inputs and a warm-up already in place), divided by the size of one fp32 (B, L, V) tensor (the
model's output) and by the dense reference's extra peak. The dense reference materialises the full output and
computes the reference's formulas on it. Prints a table, then a JSON object as the last line with
"loss_extra_peak_vs_output", "loss_extra_peak_vs_dense", "sampler_extra_peak_vs_output" and
"sampler_extra_peak_vs_dense" (at the largest length). Targets: loss <= 0.25x the output and <= 0.1x dense.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def measure(operation: str, implementation: str, batch: int, length: int) -> dict:
    import torch

    from trl_ext.models.sedd import LogLinearNoise, SEDDConfig, SEDDModel, dwdse, sample_elbo_draws
    from trl_ext.models.sedd.sampling import masked_row_log_scores, transition_probabilities

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = SEDDModel(
        SEDDConfig(tokens=50257, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, length=length, dropout=0.0)
    )
    noise, mask = LogLinearNoise(), model.config.mask_index
    x0 = torch.randint(0, 50257, (batch, length))
    draws = sample_elbo_draws(
        batch, length, 1 if operation == "loss" else 3, generator=torch.Generator().manual_seed(0)
    )

    def dense_dwdse():
        k = draws.num_samples
        x = x0.repeat(k, 1)
        sigma, dsigma = noise.total_noise(draws.t.reshape(-1)), noise.rate_noise(draws.t.reshape(-1))
        masked = draws.u.reshape(k * batch, length) < 1 - torch.exp(-sigma)[:, None]
        xt = torch.where(masked, torch.full_like(x, mask), x)
        score = model(xt, sigma)
        ratio = 1 / torch.expm1(sigma)[:, None]
        entropy = (
            score[..., :-1].exp().sum(-1)
            - ratio * score.gather(-1, x[..., None]).squeeze(-1)
            + ratio * (ratio.log() - 1)
        )
        return (dsigma * torch.where(masked, entropy, torch.zeros_like(entropy)).sum(-1)).view(k, batch).mean(0)

    def sampler_step():
        x = torch.where(torch.rand(batch, length) < 0.5, torch.full_like(x0, mask), x0)
        sigma = noise.total_noise(torch.tensor(0.5)).expand(batch)
        kappa = torch.tensor(0.01)
        if implementation == "lean":
            updates = [
                (rows, cols, torch.multinomial(transition_probabilities(log_scores, kappa), 1).squeeze(-1))
                for rows, cols, log_scores in masked_row_log_scores(model, x, sigma)
            ]
            for rows, cols, tokens in updates:
                x[rows, cols] = tokens
        else:  # the reference's Euler step: exp score, one-hot rate matrices, Gumbel-style categorical sampling
            score = model(x, sigma).exp()
            rate = torch.nn.functional.one_hot(x, mask + 1).float() * -1 + (x == mask)[..., None].float()
            reverse = rate * score
            reverse.scatter_(-1, x[..., None], torch.zeros_like(x[..., None], dtype=reverse.dtype))
            reverse.scatter_(-1, x[..., None], -reverse.sum(-1, keepdim=True))
            probs = torch.nn.functional.one_hot(x, mask + 1).float() + kappa * reverse
            x = (probs / -torch.log(torch.rand_like(probs) + 1e-10)).argmax(-1)

    def run():
        if operation == "sampler":
            with torch.no_grad():
                sampler_step()
            return
        with torch.set_grad_enabled(operation == "loss"):
            value = dwdse(model, x0, noise, draws) if implementation == "lean" else dense_dwdse()
        if operation == "loss":
            value.sum().backward()

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"extra_peak_bytes": peak - baseline, "seconds": seconds, "output_bytes": batch * length * (mask + 1) * 4}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.worker:
        print(json.dumps(measure(cli.worker[0], cli.worker[1], int(cli.worker[2]), int(cli.worker[3]))))
        return
    # Peak RSS measures live tensors only if freed memory goes back to the OS. glibc raises its mmap threshold after
    # large frees (up to 32 MiB), after which freed tensors stay in the heap and the peak depends on allocation
    # history: the same run then measured anywhere from 0.28x to 0.67x. A fixed threshold keeps large tensors mmapped
    # (returned on free); the page faults make the times slower, for both implementations alike.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    rows = []
    for length in cli.lengths:
        for operation in ("loss", "elbo", "sampler"):
            for implementation in ("lean", "dense"):
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    operation,
                    implementation,
                    str(cli.batch),
                    str(length),
                ]
                result = json.loads(
                    subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                    .stdout.strip()
                    .splitlines()[-1]
                )
                rows.append({"length": length, "operation": operation, "implementation": implementation, **result})
    print(f"{'L':>5} {'operation':<9} {'impl':<6} {'extra peak MiB':>15} {'x output':>9} {'seconds':>8}")
    for row in rows:
        print(
            f"{row['length']:>5} {row['operation']:<9} {row['implementation']:<6} {row['extra_peak_bytes'] / 2**20:15.1f} "
            f"{row['extra_peak_bytes'] / row['output_bytes']:9.3f} {row['seconds']:8.3f}"
        )
    longest = max(cli.lengths)
    pick = {(r["operation"], r["implementation"]): r for r in rows if r["length"] == longest}
    summary = {"batch": cli.batch, "length": longest, "vocab": 50258}
    for operation in ("loss", "elbo", "sampler"):
        lean, dense = pick[(operation, "lean")], pick[(operation, "dense")]
        summary[f"{operation}_extra_peak_vs_output"] = lean["extra_peak_bytes"] / lean["output_bytes"]
        summary[f"{operation}_extra_peak_vs_dense"] = lean["extra_peak_bytes"] / max(dense["extra_peak_bytes"], 1)
        summary[f"{operation}_dense_extra_peak_vs_output"] = dense["extra_peak_bytes"] / dense["output_bytes"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
