#!/usr/bin/env python3
"""A PyTorch DLRM of the same shapes as a Bagel model.json, timed eager and as a CUDA graph.

The module follows facebookresearch/dlrm's DLRM_Net forward (ReLU after each bottom layer,
nn.EmbeddingBag per table in sum mode, dot interaction over the strict lower triangle, top MLP
with a sigmoid), so its state_dict names are the ones Bagel reads. For `interaction: "dcn"` (MLPerf
DLRM-v2) it is TorchRec's DLRM_DCN forward in plain PyTorch: the concatenation x0 through a low-rank
cross network, x_{l+1} = x0 * (W_l (V_l x_l) + b_l) + x_l, then the over arch (the last layer linear);
each table's bag holds its `multi_hot` lookups. Inputs are resident on the GPU (random dense
features, uniform indices): the number is the forward alone, as Bagel's `device forward` line reports it.
`--autocast bf16` runs it under torch.autocast (TorchRec's bf16 anchor in issue 10); the copy bandwidth
of the same card is printed first.

    python3 Benchmarks/torch_dlrm.py --config model.json --batch 2048 16384 [--lookups N] [--autocast bf16] [--json OUT]

(`bagel init --preset terabyte --config-only --out DIR` writes such a model.json without weights.)
"""
import argparse
import json
import statistics

import torch
import torch.nn as nn

from torch_embedding_bag import copy_bandwidth  # same folder: the copy probe every Bagel benchmark reports


def mlp(sizes, sigmoid_last):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == len(sizes) - 2
        layers.append(nn.Sigmoid() if (last and sigmoid_last) else nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dim = config["bottom_mlp"][-1]
        self.interaction = config.get("interaction", "dot")
        if self.interaction == "dcn":
            width = self.dim + sum(t["dim"] for t in config["tables"])
            rank, layers = config["dcn"]["low_rank"], config["dcn"]["layers"]
            scale = (1.0 / width) ** 0.5
            self.V = nn.ParameterList([nn.Parameter(torch.randn(rank, width) * scale) for _ in range(layers)])
            self.W = nn.ParameterList([nn.Parameter(torch.randn(width, rank) * (1.0 / rank) ** 0.5) for _ in range(layers)])
            self.b = nn.ParameterList([nn.Parameter(torch.zeros(width)) for _ in range(layers)])
        self.emb_l = nn.ModuleList(
            [nn.EmbeddingBag(t["rows"], t["dim"], mode=t.get("pooling", "sum"), include_last_offset=True)
             for t in config["tables"]])
        self.bot_l = mlp([config["dense_features"]] + config["bottom_mlp"], sigmoid_last=False)
        n = len(config["tables"])
        if self.interaction == "dot":
            top_in = self.dim + n * (n + 1) // 2
        else:
            top_in = self.dim + sum(t["dim"] for t in config["tables"])
        # The last top layer is linear and the sigmoid follows it (DLRM_DCN's over arch, then its probability).
        self.top_l = mlp([top_in] + config["top_mlp"], sigmoid_last=True)
        li, lj = torch.tril_indices(n + 1, n + 1, offset=-1)
        self.register_buffer("li", li)
        self.register_buffer("lj", lj)

    def forward(self, dense, indices, offsets):
        x = self.bot_l(dense)
        ly = [emb(i, o) for emb, i, o in zip(self.emb_l, indices, offsets)]
        if self.interaction == "dcn":
            x0 = torch.cat([x] + ly, dim=1)
            r = x0
            for V, W, b in zip(self.V, self.W, self.b):
                r = x0 * (torch.nn.functional.linear(torch.nn.functional.linear(r, V), W) + b) + r
        elif self.interaction == "dot":
            t = torch.cat([x] + ly, dim=1).view(x.shape[0], -1, self.dim)
            z = torch.bmm(t, t.transpose(1, 2))
            r = torch.cat([x, z[:, self.li, self.lj]], dim=1)
        else:
            r = torch.cat([x] + ly, dim=1)
        return self.top_l(r)


def time_eager(model, inputs, iterations=30):
    with torch.inference_mode():
        for _ in range(5):
            model(*inputs)
        times = []
        for _ in range(iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(*inputs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def time_graph(model, inputs, iterations=30):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(side):
            for _ in range(3):
                model(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(*inputs)
        for _ in range(3):
            graph.replay()
        times = []
        for _ in range(iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def random_inputs(config, batch, lookups, generator):
    dense = torch.rand(batch, config["dense_features"], device="cuda", generator=generator)
    indices, offsets = [], []
    for t in config["tables"]:
        hot = t.get("multi_hot", lookups)
        indices.append(torch.randint(0, t["rows"], (batch * hot,), device="cuda", generator=generator))
        offsets.append(torch.arange(0, batch * hot + 1, hot, device="cuda"))
    return dense, indices, offsets


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a Bagel model.json")
    parser.add_argument("--batch", type=int, nargs="+", default=[2048, 16384])
    parser.add_argument("--lookups", type=int, help="lookups per bag (default: the model's)")
    parser.add_argument("--autocast", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: the forward under torch.autocast (dense math in bf16, tables fp32)")
    parser.add_argument("--json")
    args = parser.parse_args()
    copy = copy_bandwidth()
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}: copy bandwidth {copy / 1e12:.2f} TB/s")
    with open(args.config) as f:
        config = json.load(f)
    lookups = args.lookups or config.get("lookups_per_table", 1)
    torch.manual_seed(0)
    model = DLRM(config).cuda().eval()
    generator = torch.Generator(device="cuda")
    generator.manual_seed(1)
    results = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.autocast == "bf16")
    for batch in args.batch:
        inputs = random_inputs(config, batch, lookups, generator)
        with autocast:
            eager = time_eager(model, inputs)
            graph = time_graph(model, inputs)
        results.append({"batch": batch, "lookups": lookups, "autocast": args.autocast, "eager_ms": eager * 1e3,
                        "graph_ms": graph * 1e3, "eager_samples_per_second": batch / eager,
                        "graph_samples_per_second": batch / graph})
        bags = "each table's multi_hot lookups" if any("multi_hot" in t for t in config["tables"]) else f"{lookups} lookup(s)"
        print(f"PyTorch {torch.__version__} DLRM {config.get('name', '')} ({args.autocast}) batch {batch}, {bags}: "
              f"eager {eager * 1e3:.3f} ms ({batch / eager:,.0f}/s), CUDA graph {graph * 1e3:.3f} ms ({batch / graph:,.0f}/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "model": config.get("name"),
                       "copy_terabytes_per_second": copy / 1e12, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
