"""
Training LeNet5 with TDLRT: ranks found during training
=======================================================

The paper's MNIST experiment in miniature: LeNet5's two convolutions are stored in Tucker
format at full rank and trained by :class:`tucker_dlra.nn.TDLRT` (Algorithm 1, one SGD
step per substep); the truncation with tolerance :math:`\\tau` finds their ranks during
training.  Data: the 10,000 real MNIST training images shipped with the package
(:func:`tucker_dlra.nn.load_dataset`), so no download is needed.  A short run (one epoch
of batches of 64, about 150 steps) already shows the ranks collapse; ``tucker-dlra
train`` runs the full experiment.
"""

# %%
# Model, optimizer, data
# ----------------------
# :func:`tucker_dlra.nn.tuckerize` converts the convolutions (exactly, at full rank); the
# dense fully connected layers are trained by the same optimizer with plain SGD with
# momentum, as in the paper.
import matplotlib.pyplot as plt
import torch
from torch import nn
from tucker_dlra.app import LeNet5, evaluate, load_dataset
from tucker_dlra.nn import TDLRT, compression_report, tuckerize

torch.manual_seed(0)
torch.set_num_threads(1)
model = tuckerize(LeNet5(), exclude=nn.Linear)
opt = TDLRT(model.parameters(), lr=0.05, momentum=0.1, tau=0.2)  # per-mode rule
train, test = load_dataset("mnist-subset")
print("training images:", len(train), " test images:", len(test))
print("initial ranks: conv1", model.conv1.ranks, " conv2", model.conv2.ranks)

# %%
# One epoch, recording the ranks after every step
# -----------------------------------------------
history = {"conv1": [], "conv2": [], "loss": []}
for step, (x, y) in enumerate(train.batches(64, shuffle=True)):
    if step == 150:
        break
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()  # K-steps, augmentation, C-step, truncation for both convolutions
    history["loss"].append(loss.item())
    history["conv1"].append(model.conv1.ranks)
    history["conv2"].append(model.conv2.ranks)
test_loss, test_acc = evaluate(model, test)
print(f"after {len(history['loss'])} steps: test accuracy {100 * test_acc:.2f} %")
print("ranks: conv1", model.conv1.ranks, " conv2", model.conv2.ranks)

# %%
# The compression report
# ----------------------
# Eval compression counts the parameters of the current Tucker factors against the dense
# kernel (the paper's Section 4.1); train compression also counts what one training step
# holds (the augmented bases of width :math:`2r`).
report = compression_report(model, input_shape=(1, 28, 28), optimizer=opt)
print(report)

# %%
# Rank history
# ------------
fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
for ax, name, full in ((axes[0], "conv1", (20, 1, 5, 5)), (axes[1], "conv2", (50, 20, 5, 5))):
    ranks = history[name]
    for i in range(4):
        ax.plot([r[i] for r in ranks], label=f"mode {i} (n={full[i]})")
    ax.set_title(f"{name} Tucker ranks")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
axes[2].plot(history["loss"], lw=0.8)
axes[2].set_yscale("log")
axes[2].set_title("training loss")
axes[2].set_xlabel("step")
fig.tight_layout()
