"""Cost of each deep method's regulariser per training step, against the plain network's step.

Usage: python benchmarks/bench_regularizers.py [--device cpu|cuda] [--batch 64] [--threads N] [--quick]

One step = forward, loss (+ penalty), backward, optimiser step (+ proximal hooks), on a
batch of digits images through DigitsCNN. Rows:
- Adaptive Sharing layer (smoothed nuclear norm on C + l1 prox on S) vs a plain last layer;
- Deep-AMTFL (reconstruction op, loss-weighted l1 prox on A, l1 prox on W) vs the plain one-vs-all CNN;
- joint IRLS: the per-network consistency penalty (pairwise distances to the consensus of
  n = 5 networks, through the IRLS ops) added to one network's step;
- CETL: the DWA penalty (ops.dwa_penalty over all parameters) added to a step.
The ratio is (step with regulariser) / (plain step): 1.0 means free.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from common import bench_parser, bench_setup, time_fn, write_table

from mtlkernels import ops
from mtlkernels.datasets import digits_images
from mtlkernels.nn import AdaptiveSharingLinear, DeepAMTFL, DigitsCNN, OneVsAllCNN
from mtlkernels.nn.hooks import apply_proximal_steps, total_penalty


def step_fn(model, X, y, loss_fn, extra=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        out = model(X)
        loss = loss_fn(out, y) + total_penalty(model)
        if extra is not None:
            loss = loss + extra()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        apply_proximal_steps(model, 0.01)

    return step


def main():
    p = bench_parser(__doc__)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    device = bench_setup(args)
    data = digits_images(seed=0)
    X, y = data.X_train[: args.batch].to(device), data.y_train[: args.batch].to(device)
    rows = []

    def compare(name, plain, regularised):
        reps = 10 if args.quick else 50
        t0 = time_fn(plain, device, warmup=5, reps=reps)
        t1 = time_fn(regularised, device, warmup=5, reps=reps)
        rows.append([name, t0 * 1e3, t1 * 1e3, t1 / t0])
        print(rows[-1], flush=True)

    torch.manual_seed(0)
    plain = DigitsCNN().to(device)
    as_net = DigitsCNN().to(device)
    as_net.head = AdaptiveSharingLinear(as_net.hidden, 10, lambda_c=1e-3, lambda_s=5e-4, eps=1e-2).to(device)
    compare("Adaptive Sharing layer (Shen et al. 2015)", step_fn(plain, X, y, F.cross_entropy),
            step_fn(as_net, X, y, F.cross_entropy))

    base = OneVsAllCNN(DigitsCNN()).to(device)
    amtfl = DeepAMTFL(DigitsCNN(), alpha=0.1, mu=1e-3, gamma=1e-2).to(device)
    compare("Deep-AMTFL terms (Lee et al. 2018, eq. 7)", step_fn(base, X, y, base.loss), step_fn(amtfl, X, y, amtfl.loss))

    # joint IRLS: one network's step plus its consistency to 4 fixed others
    net = DigitsCNN().to(device)
    others = [DigitsCNN().to(device) for _ in range(4)]
    sizes = [p.numel() for p in net.parameters()]
    offsets = ops.layer_offsets(sizes)
    fixed = torch.stack([torch.cat([q.detach().flatten() for q in o.parameters()]) for o in others])

    def consistency():
        mine = torch.cat([q.flatten() for q in net.parameters()])[None]
        params = torch.cat([mine, fixed])
        return 1e-3 * ops.robust_consistency(params, offsets, torch.ones(len(sizes), dtype=torch.float64, device=device))

    compare("joint IRLS consistency, n = 5 (Zhang et al. 2019, eq. 3)", step_fn(net, X, y, F.cross_entropy),
            step_fn(net, X, y, F.cross_entropy, consistency))

    # CETL: DWA penalty over every parameter towards fixed anchors
    cnet = DigitsCNN().to(device)
    anchors = [q.detach().clone() + 0.01 for q in cnet.parameters()]
    importance = [torch.rand_like(q) for q in cnet.parameters()]

    def dwa():
        return ops.dwa_penalty(list(cnet.parameters()), anchors, importance, 1e-2)

    compare("CETL DWA penalty (Chen et al. 2018, eq. 11)", step_fn(cnet, X, y, F.cross_entropy),
            step_fn(cnet, X, y, F.cross_entropy, dwa))
    write_table("regularizers", device, ["regulariser", "plain step ms", "with regulariser ms", "ratio"], rows,
                f"python benchmarks/bench_regularizers.py --device {device} --batch {args.batch}"
                + (f" --threads {args.threads}" if args.threads else ""),
                notes=f"DigitsCNN on 8x8 digits, batch {args.batch}, SGD; medians of 50 steps; threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
