"""Record mallocGame instances from real PyTorch programs: 8 models written here in plain torch (random weights,
no downloads), traced with torch.fx and run once on CPU through ShapeProp, at several batch sizes.

One buffer per tensor an operation produces (the input included; weights are not buffers). Views (view,
reshape, flatten, transpose, permute, (un)squeeze, expand, contiguous, getitem, chunk, split) alias the tensor
they view: its buffer lives until the last use of any alias. A buffer produced by schedule step t (the node's
index in the fx graph) and last read at step u is live over [t, u + 1); one never read over [t, t + 1).
Size: bytes, rounded up to 64. Benefit (the cost model): bytes x uses, uses = 1 write + the number of
operations that read it, i.e. the bytes a fast memory would serve. Capacity: half the program's peak live
bytes (at least its largest buffer), rounded up to 64.

Splits: ``train`` = cnn, resnet, transformer, mixer, lstm at batch 1, 4, 8; ``heldout_models`` = unet,
mobilenet, densenet at batch 1, 4, 8; ``heldout_batch`` = the training models at batch 32.

    python scripts/mallocgame_record.py            # writes dreamalloc/mallocgame/data/programs.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import operator
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamalloc.mallocgame.instances import DATA, FORMAT, make_instance  # noqa: E402

ALIGN = 64
CAPACITY_FRAC = 0.5
VIEWS = {"view", "reshape", "flatten", "transpose", "permute", "unsqueeze", "squeeze", "expand", "contiguous",
         "chunk", "split", "unbind", "t", "narrow", "select", operator.getitem, torch.flatten, torch.transpose,
         torch.reshape, torch.permute, torch.unsqueeze, torch.squeeze, torch.chunk, torch.split, torch.unbind,
         torch.t, torch.narrow, torch.select}


# ---------------------------------------------------------------------------------------------- models
class CNN(nn.Module):  # VGG-style
    def __init__(self):
        super().__init__()
        ch = [3, 16, 32, 64]
        self.convs = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 3, padding=1) for i in range(3))
        self.convs2 = nn.ModuleList(nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1) for i in range(3))
        self.fc = nn.Linear(64 * 4 * 4, 10)

    def forward(self, x):
        for c1, c2 in zip(self.convs, self.convs2, strict=True):
            x = F.max_pool2d(F.relu(c2(F.relu(c1(x)))), 2)
        return self.fc(torch.flatten(x, 1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.down(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1),
                                    Block(32, 64, 2), Block(64, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class EncoderLayer(nn.Module):
    def __init__(self, d=64, heads=4):
        super().__init__()
        self.h, self.qkv, self.o = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.f1, self.f2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).chunk(3, -1)
        q, k, v = (z.reshape(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.h) ** 0.5, -1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.f2(F.gelu(self.f1(self.n2(x))))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.layers, self.head = nn.Linear(16, 64), nn.Sequential(*[EncoderLayer() for _ in range(3)]), \
            nn.Linear(64, 10)

    def forward(self, x):  # [b, 32, 16]
        return self.head(self.layers(self.emb(x)).mean(1))


class Mixer(nn.Module):
    def __init__(self, patches=16, d=64, layers=3):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, 8)
        self.tok = nn.ModuleList(nn.Sequential(nn.Linear(patches, 64), nn.GELU(), nn.Linear(64, patches))
                                 for _ in range(layers))
        self.ch = nn.ModuleList(nn.Sequential(nn.Linear(d, 128), nn.GELU(), nn.Linear(128, d)) for _ in range(layers))
        self.n1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.n2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.head = nn.Linear(d, 10)

    def forward(self, x):  # [b, 3, 32, 32]
        x = self.patch(x).flatten(2).transpose(1, 2)  # [b, 16, d]
        for tok, ch, n1, n2 in zip(self.tok, self.ch, self.n1, self.n2, strict=True):
            x = x + tok(n1(x).transpose(1, 2)).transpose(1, 2)
            x = x + ch(n2(x))
        return self.head(x.mean(1))


class LSTM(nn.Module):  # unrolled, so every step's gates are buffers of the program
    def __init__(self, d_in=16, d=64, steps=12):
        super().__init__()
        self.steps, self.d = steps, d
        self.ih, self.hh, self.head = nn.Linear(d_in, 4 * d), nn.Linear(d, 4 * d), nn.Linear(d, 10)

    def forward(self, x):  # [b, steps, d_in]
        h = x.new_zeros(x.shape[0], self.d)
        c = x.new_zeros(x.shape[0], self.d)
        for t in range(self.steps):
            i, f, g, o = (self.ih(x[:, t]) + self.hh(h)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        conv = lambda a, b: nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.Conv2d(b, b, 3, padding=1),
                                          nn.ReLU())
        self.d1, self.d2, self.d3 = conv(3, 16), conv(16, 32), conv(32, 64)
        self.u2, self.u1 = nn.ConvTranspose2d(64, 32, 2, 2), nn.ConvTranspose2d(32, 16, 2, 2)
        self.c2, self.c1, self.out = conv(64, 32), conv(32, 16), nn.Conv2d(16, 2, 1)

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(F.max_pool2d(a, 2))
        c = self.d3(F.max_pool2d(b, 2))
        b = self.c2(torch.cat([self.u2(c), b], 1))
        return self.out(self.c1(torch.cat([self.u1(b), a], 1)))


class Inverted(nn.Module):
    def __init__(self, cin, cout, stride, expand=4):
        super().__init__()
        h = cin * expand
        self.res = stride == 1 and cin == cout
        self.body = nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                  nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                  nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


class MobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.body = nn.Sequential(Inverted(16, 16, 1), Inverted(16, 24, 2), Inverted(24, 24, 1), Inverted(24, 32, 2),
                                  Inverted(32, 32, 1), Inverted(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


class DenseNet(nn.Module):
    def __init__(self, growth=12, layers=4):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.blocks, self.trans, ch = nn.ModuleList(), nn.ModuleList(), 24
        for _ in range(2):
            convs = nn.ModuleList()
            for _ in range(layers):
                convs.append(nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, growth, 3, padding=1)))
                ch += growth
            self.blocks.append(convs)
            self.trans.append(nn.Conv2d(ch, ch // 2, 1))
            ch //= 2
        self.fc = nn.Linear(ch, 10)

    def forward(self, x):
        x = self.stem(x)
        for convs, tr in zip(self.blocks, self.trans, strict=True):
            for conv in convs:
                x = torch.cat([x, conv(x)], 1)
            x = F.avg_pool2d(tr(x), 2)
        return self.fc(x.mean((2, 3)))


MODELS = {"cnn": (CNN, (3, 32, 32)), "resnet": (ResNet, (3, 32, 32)), "transformer": (Transformer, (32, 16)),
          "mixer": (Mixer, (3, 32, 32)), "lstm": (LSTM, (12, 16)), "unet": (UNet, (3, 32, 32)),
          "mobilenet": (MobileNet, (3, 32, 32)), "densenet": (DenseNet, (3, 32, 32))}
TRAIN_MODELS, HELDOUT_MODELS = ("cnn", "resnet", "transformer", "mixer", "lstm"), ("unet", "mobilenet", "densenet")
TRAIN_BATCHES, HELDOUT_BATCHES = (1, 4, 8), (32,)


# ---------------------------------------------------------------------------------------------- recording
def _target_name(node) -> object:
    return node.target if node.op != "call_module" else None


def record(model: nn.Module, example: torch.Tensor, name: str, meta: dict) -> dict:
    """The instance (as a JSON dict) of one traced and executed program."""
    gm = symbolic_trace(model.eval())
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    root, buf = {}, {}  # node -> the node whose buffer it is; buffer node -> [start, last use, bytes, reads]
    for n in nodes:
        tm = n.meta.get("tensor_meta")
        args = [a for a in n.all_input_nodes if a in root]
        if n.op == "output":
            for a in args:
                buf[root[a]][1] = index[n]
            continue
        is_view = n.op in ("call_function", "call_method") and n.target in VIEWS
        for r in {root[a] for a in args}:  # a read of every distinct buffer it takes (views read nothing)
            buf[r][1] = max(buf[r][1], index[n])
            if not is_view:
                buf[r][3] += 1
        if (is_view or not isinstance(tm, TensorMetadata)) and args:
            root[n] = root[args[0]]  # a view, or a tuple of views / results of its first input
            continue
        if isinstance(tm, TensorMetadata):
            nbytes = tm.shape.numel() * torch.empty((), dtype=tm.dtype).element_size()
            root[n] = n
            buf[n] = [index[n], index[n], -(-nbytes // ALIGN) * ALIGN, 1]
    buffers = [[s, max(u, s) + 1, size, float(size * uses)] for s, u, size, uses in buf.values() if size > 0]
    inst = make_instance(name, 1 << 62, buffers)
    cap = max(int(CAPACITY_FRAC * inst.peak_live()), int(inst.size.max()))
    cap = -(-cap // ALIGN) * ALIGN
    return make_instance(name, cap, buffers, {**meta, "capacity_frac": CAPACITY_FRAC,
                                              "peak_live": inst.peak_live(), "unit": "bytes"}).to_json()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DATA))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    plan = [(m, b, "train") for m in TRAIN_MODELS for b in TRAIN_BATCHES]
    plan += [(m, b, "heldout_models") for m in HELDOUT_MODELS for b in TRAIN_BATCHES]
    plan += [(m, b, "heldout_batch") for m in TRAIN_MODELS for b in HELDOUT_BATCHES]
    out = []
    for model, batch, split in plan:
        cls, shape = MODELS[model]
        torch.manual_seed(0)
        inst = record(cls(), torch.randn(batch, *shape), f"{model}_b{batch}",
                      {"model": model, "batch": batch, "split": split})
        print(f"{inst['name']:16s} {split:15s} buffers={len(inst['buffers']):4d} capacity={inst['capacity']}")
        out.append(inst)
    doc = {"format": FORMAT, "provenance": {
        "script": "scripts/mallocgame_record.py", "command": "python scripts/mallocgame_record.py",
        "torch": torch.__version__, "tracer": "torch.fx symbolic_trace + ShapeProp on CPU, random weights (seed 0)",
        "cost_model": "benefit = bytes x (1 write + reads)", "capacity": f"{CAPACITY_FRAC} x peak live bytes"},
        "instances": out}
    with gzip.open(args.out, "wt", compresslevel=9) as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {len(out)} instances to {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
