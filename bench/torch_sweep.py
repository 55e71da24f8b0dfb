"""The plain torch script a user would write for fastrank's sweep: several seeds of a
BN + ReLU network stacked and run together, float64 singular values at the measured
layers, saved with np.savez. The bench times it in process (:func:`run`) and as a whole
process (``python -m fastrank.bench.torch_sweep``), against `fastrank sweep`.

Written as a torch user would: H as (seeds, batch, features), one batched GEMM per
layer, batch statistics from torch.var_mean, the normalisation and ReLU in place, no
autograd.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

EPS_BN = 1e-5


def layer(h, w):
    """One layer for a stack of networks: act(BN(H W)), H (seeds, batch, features), W
    (seeds, features, features); BN over the batch axis, biased variance (training mode)."""
    import torch

    z = torch.bmm(h, w)
    var, mean = torch.var_mean(z, dim=1, keepdim=True, correction=0)
    return z.sub_(mean).mul_(torch.rsqrt(var.add_(EPS_BN))).relu_()


def run(d: int, depth: int, seeds: int, layers, path=None, device: str = "cpu") -> np.ndarray:
    """Run ``seeds`` networks of width and batch ``d`` to ``depth`` on torch ``device``;
    singular values (float64, descending) at each layer of ``layers`` (0 is the input).
    Returns them as (len(layers), seeds, d) and writes them to ``path`` (.npz) when given.
    On a GPU the spectra stay there until the end (torch's float32 GEMMs are not TF32
    by default, as fastrank's)."""
    import torch

    wanted = sorted(set(int(x) for x in layers))
    scale = math.sqrt(2.0 / d)
    spectra = []
    with torch.no_grad():
        torch.manual_seed(0)
        h = torch.randn(seeds, d, d, device=device)
        if 0 in wanted:
            spectra.append(torch.linalg.svdvals(h.double()))
        for at in range(1, depth + 1):
            w = torch.randn(seeds, d, d, device=device).mul_(scale)
            h = layer(h, w)
            if at in wanted:
                spectra.append(torch.linalg.svdvals(h.double()))
    out = torch.stack(spectra).cpu().numpy()
    if path is not None:
        np.savez(path, layer=np.asarray(wanted), spectrum=out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, required=True)
    parser.add_argument("--depth", type=int, required=True)
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--layers", required=True, help="comma-separated measured layers")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run(args.d, args.depth, args.seeds, [int(x) for x in args.layers.split(",")], args.output,
        args.device)


if __name__ == "__main__":
    main()
