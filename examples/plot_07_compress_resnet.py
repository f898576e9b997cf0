"""
Compressing a ResNet-style model and reading its report
=======================================================

:func:`tucker_dlra.nn.tuckerize` works on any ``torch.nn`` model: it replaces every
selected ``nn.Conv2d`` by a :class:`tucker_dlra.nn.TuckerConv2d` initialised with the
truncated HOSVD of its kernel (and, unless excluded, every ``nn.Linear`` by a
:class:`tucker_dlra.nn.LowRankLinear`).  Here we define a small ResNet-like network (the
structure of torchvision's ``resnet18``, narrower), convert it at several tolerances,
read :func:`tucker_dlra.nn.compression_report`, and take a few TDLRT steps.
"""

# %%
# A small residual network
# ------------------------
import matplotlib.pyplot as plt
import torch
from torch import nn
from tucker_dlra.nn import TDLRT, compression_report, tuckerize

torch.manual_seed(0)
torch.set_num_threads(1)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = Block(width, width)
        self.layer2 = Block(width, 2 * width, stride=2)
        self.layer3 = Block(2 * width, 4 * width, stride=2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


dense = SmallResNet()
x = torch.randn(8, 3, 32, 32)

# %%
# Trained convolutions have quickly decaying multilinear singular values; a random
# initialisation has not (it is incompressible).  To keep this example self-contained
# (no data set, no pretrained weights), we give the kernels that structure by hand:
# each kernel is replaced by its truncated HOSVD at a quarter of the channel ranks plus 5 %
# noise.  :func:`tucker_dlra.hosvd` works on ``torch.Tensor`` directly.
from tucker_dlra import hosvd, valid_rank  # noqa: E402

with torch.no_grad():
    for mod in dense.modules():
        if isinstance(mod, nn.Conv2d):
            w = mod.weight
            # the largest Tucker rank within these bounds (r_i <= product of the others)
            rank = valid_rank((max(2, w.shape[0] // 4), max(1, w.shape[1] // 4), *w.shape[2:]))
            low = hosvd(w.double(), rank=rank).full().float()
            noise = torch.randn_like(w)
            w.copy_(low + 0.05 * low.norm() / noise.norm() * noise)

# %%
# Conversion: exact at full rank, or truncated
# --------------------------------------------
# Without ``rank``/``rtol`` the conversion is lossless.  With ``rtol`` each kernel is
# truncated so that :math:`\|W - \widehat W\| \le \mathrm{rtol}\,\|W\|`; the output
# changes accordingly.
exact = tuckerize(dense, exclude=nn.Linear)
print("lossless conversion, max output difference:",
      f"{(exact.eval()(x) - dense.eval()(x)).abs().max().item():.1e}")
rows = []
for rtol in (0.0, 0.02, 0.1, 0.3):
    m = tuckerize(dense, rtol=rtol or None, exclude=nn.Linear)
    rep = compression_report(m, input_shape=(3, 32, 32))
    diff = ((m.eval()(x) - dense.eval()(x)).norm() / dense.eval()(x).norm()).item()
    rows.append((rtol, rep.eval_compression_conv, rep.flops_factorized / rep.flops_dense, diff))
print(f"{'rtol':>5} {'conv eval compression':>22} {'FLOPs fact./dense':>18} {'output change':>14}")
for rtol, comp, fl, diff in rows:
    print(f"{rtol:5.2f} {comp:21.1f}% {fl:18.2f} {diff:14.2e}")

# %%
# Reading the report
# ------------------
# One row per convolution or linear layer: its kind (``tdlrt`` for a Tucker layer,
# ``dense`` otherwise), kernel shape and current ranks; parameter counts of the dense
# kernel, of the factors (``eval``) and during a training step (``train``: the augmented
# bases of Algorithm 1); the compression rates; the FLOPs of the dense and factorized
# forward pass per sample; the bytes of parameters and optimizer state.  The totals below
# the table give the paper's compression rates over all layers and over the convolutions.
model = tuckerize(dense, rtol=0.1, exclude=nn.Linear)
opt = TDLRT(model.parameters(), lr=0.05, momentum=0.9, tau=0.3)
print(compression_report(model, input_shape=(3, 32, 32), optimizer=opt))

# %%
# The report's fields are attributes (``report.layers[k].ranks``,
# ``report.eval_compression_conv``, ...); ``report.to_dict()`` is JSON-ready.
#
# A few training steps
# --------------------
# On random labels (this example has no data set), five TDLRT steps at ``tau=0.3``
# (per-mode rule, see the vocabulary page): the truncation after each step removes the
# directions whose singular values fall below :math:`\tau` times the core's norm, so the
# ranks drop further than the conversion's ``rtol=0.1`` did.
y = torch.randint(0, 10, (8,))
model.train()
before = {n: mod.ranks for n, mod in model.named_modules() if hasattr(mod, "ranks")}
for _ in range(5):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
rep = compression_report(model, input_shape=(3, 32, 32), optimizer=opt)
for layer in rep.layers:
    if layer.kind == "tdlrt":
        print(f"{layer.name:>16}: ranks {before[layer.name]} -> {layer.ranks}")

fig, ax = plt.subplots(figsize=(8, 3.4))
names = [layer.name for layer in rep.layers]
ax.bar(range(len(names)), [layer.params_dense for layer in rep.layers], label="dense")
ax.bar(range(len(names)), [layer.params_eval for layer in rep.layers], label="Tucker (eval)")
ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
ax.set_yscale("log")
ax.set_ylabel("parameters")
ax.set_title("parameters per layer, dense vs Tucker")
ax.legend(fontsize=8)
fig.tight_layout()
