"""The ``tucker-dlra`` command line (also ``python -m tucker_dlra``).

Subcommands::

    tucker-dlra train      train a model x dataset x method (default: LeNet5, TDLRT, embedded MNIST)
    tucker-dlra evaluate   accuracy and loss of a checkpoint on a dataset
    tucker-dlra report     ranks and compression table of a checkpoint
    tucker-dlra export     dense model of a checkpoint, for deployment
    tucker-dlra plot       redraw the figures of a run folder
    tucker-dlra verify     numerical checks of the integrator theorems on synthetic problems

Bad arguments give a one-line message on stderr and exit status 2 (set ``TUCKER_DLRA_DEBUG=1``
for the traceback); a training failure (e.g. a non-finite loss) exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

PROG = "tucker-dlra"
USER_ERROR = 2


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


# --------------------------------------------------------------------------- argument types
def _nonneg_float(name: str):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {s!r}") from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0; got {s}")
        return v

    return parse


def _tau(s: str) -> float:
    v = _nonneg_float("tau")(s)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"tau must be in [0, 1); got {s}")
    return v


def _pos_float(name: str):
    def parse(s: str) -> float:
        v = _nonneg_float(name)(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0; got {s}")
        return v

    return parse


def _unit_interval(name: str, open_left: bool = False, open_right: bool = True):
    def parse(s: str) -> float:
        v = _nonneg_float(name)(s)
        if (open_left and v == 0) or (open_right and v >= 1) or v > 1:
            lo, hi = "(" if open_left else "[", ")" if open_right else "]"
            raise argparse.ArgumentTypeError(f"{name} must be in {lo}0, 1{hi}; got {s}")
        return v

    return parse


def _pos_int(name: str):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer; got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1; got {s}")
        return v

    return parse


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {s!r}") from None


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``tucker-dlra`` command (all subcommands)."""
    from .datasets import DATASETS
    from .models import MODELS
    from .train import METHODS, SCHEDULES

    p = _Parser(prog=PROG, description="Rank-adaptive training of Tucker convolutions (TDLRT) "
                "and numerical checks of the DLRA integrators.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model (default: LeNet5 with TDLRT on the embedded "
                       "MNIST subset)", description="Train a model x dataset x method. Defaults "
                       "follow the paper's Appendix A (SGD, lr 0.05 divided by 10 on a validation"
                       "-loss plateau, momentum 0.1, batch 128).")
    g = t.add_argument_group("what to train")
    g.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    g.add_argument("--dataset", choices=sorted(DATASETS), default="mnist-subset",
                   help="mnist-subset (shipped, 10k/2k real MNIST images), mnist, fashion-mnist, "
                   "cifar10 (from --data-dir) [mnist-subset]")
    g.add_argument("--method", choices=list(METHODS), default="tdlrt",
                   help="baseline (dense), tdlrt (Algorithm 1), tdlrt-parallel (parallel BUG), "
                   "or the fixed-rank vanilla baselines [tdlrt]")
    g.add_argument("--compress", choices=["convs", "all"], default="convs",
                   help="low-rank convolutions only (the paper) or also linear layers [convs]")
    g = t.add_argument_group("ranks")
    g.add_argument("--tau", type=_tau, default=0.2,
                   help="relative truncation tolerance of TDLRT, in [0, 1) [0.2]")
    g.add_argument("--rule", choices=["per_mode", "split"], default="per_mode",
                   help="truncation rule: per_mode keeps each mode's tail <= tau*||C|| (the "
                   "paper's numbers), split keeps the total error <= tau*||C|| [per_mode]")
    r = g.add_mutually_exclusive_group()
    r.add_argument("--rank", type=_pos_int("rank"),
                   help="initial (TDLRT) or fixed (vanilla) rank of every mode, clipped per mode")
    r.add_argument("--rank-fraction", type=_unit_interval("rank-fraction", True, False),
                   help="initial/fixed rank as a fraction kappa of each mode's size (vanilla "
                   "default 0.5; TDLRT default: full rank)")
    g.add_argument("--max-rank", type=_pos_int("max-rank"), help="upper bound on every rank")
    g = t.add_argument_group("optimisation")
    g.add_argument("--epochs", type=_pos_int("epochs"), default=None, help="[15]")
    g.add_argument("--lr", type=_pos_float("lr"), default=0.05, help="learning rate [0.05]")
    g.add_argument("--schedule", choices=list(SCHEDULES), default="plateau",
                   help="plateau: divide lr by 10 when the validation loss stalls; cosine: "
                   "cosine annealing over the epochs [plateau]")
    g.add_argument("--patience", type=_int, default=2,
                   help="epochs without improvement before the plateau schedule acts [2]")
    g.add_argument("--momentum", type=_unit_interval("momentum"), default=0.1, help="[0.1]")
    g.add_argument("--bn-momentum", type=_unit_interval("bn-momentum"), default=0.9,
                   help="momentum of batch-norm parameters [0.9]")
    g.add_argument("--weight-decay", type=_nonneg_float("weight-decay"), default=0.0)
    g.add_argument("--batch-size", type=_pos_int("batch-size"), default=128, help="[128]")
    g.add_argument("--seed", type=_int, default=0, help="[0]")
    g.add_argument("--max-steps", type=_pos_int("max-steps"),
                   help="stop after this many optimizer steps (tiny runs)")
    g = t.add_argument_group("data")
    g.add_argument("--data-dir", type=Path, help="folder with the dataset files")
    g.add_argument("--download", action="store_true",
                   help="download missing files (MD5-verified) into DATA_DIR/<dataset>/")
    g.add_argument("--mirror", help="base URL to download from instead of the public mirrors")
    g.add_argument("--val-fraction", type=_unit_interval("val-fraction"), default=0.1,
                   help="share of the training images held out for validation [0.1]")
    g.add_argument("--train-limit", type=_pos_int("train-limit"),
                   help="use only this many training images (before the validation split)")
    g.add_argument("--test-limit", type=_pos_int("test-limit"),
                   help="use only this many test images")
    g = t.add_argument_group("run")
    g.add_argument("--out", type=Path,
                   help="output folder [runs/<model>-<dataset>-<method>[-tau<tau>]-seed<seed>]")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (its settings win; --epochs may extend)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [auto]")
    g.add_argument("--threads", type=_pos_int("threads"), help="torch CPU threads")
    g.add_argument("--quiet", action="store_true", help="print only the final summary")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--dataset", choices=sorted(DATASETS),
                   help="default: the checkpoint's dataset")
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--data-dir", type=Path)
    e.add_argument("--download", action="store_true")
    e.add_argument("--mirror")
    e.add_argument("--batch-size", type=_pos_int("batch-size"), default=512)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="ranks and compression table of a checkpoint")
    r.add_argument("checkpoint", type=Path)
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_report)

    x = sub.add_parser("export", help="write the dense model of a checkpoint (to_dense)")
    x.add_argument("checkpoint", type=Path)
    x.add_argument("output", type=Path, help="output file (.pt)")
    x.add_argument("--torchscript", action="store_true",
                   help="write a TorchScript module (torch.jit.trace) instead of a state dict")
    x.set_defaults(func=cmd_export)

    pl = sub.add_parser("plot", help="redraw the PNG figures of a run folder")
    pl.add_argument("run", type=Path, help="run folder (holding metrics.json)")
    pl.add_argument("--out", type=Path, help="figure folder [RUN/plots]")
    pl.set_defaults(func=cmd_plot)

    v = sub.add_parser("verify", help="check the integrators against the paper's theorems on "
                       "synthetic problems, with plots")
    v.add_argument("--out", type=Path, default=Path("runs/verify"), help="[runs/verify]")
    v.add_argument("--quick", action="store_true", help="fewer step sizes (a few seconds)")
    v.add_argument("--seed", type=_int, default=0)
    v.add_argument("--no-plots", action="store_true")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    v.set_defaults(func=cmd_verify)
    return p


# --------------------------------------------------------------------------- commands
def _check_out(path: Path) -> None:
    """Create ``path`` and make sure a file can be written there (else CommandError)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tucker-dlra-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CommandError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, format_summary, train

    if args.data_dir is not None and not args.data_dir.is_dir() and not args.download:
        raise CommandError(f"data folder {args.data_dir} does not exist (create it and add "
                           "--download, or point --data-dir to the folder holding the files)")
    if args.dataset != "mnist-subset" and args.data_dir is None:
        raise CommandError(f"dataset {args.dataset!r} needs --data-dir (add --download to fetch "
                           "it); the shipped dataset is mnist-subset")
    cfg = TrainConfig(
        model=args.model, dataset=args.dataset, method=args.method, tau=args.tau, rule=args.rule,
        epochs=args.epochs if args.epochs is not None else 15, lr=args.lr,
        schedule=args.schedule, patience=args.patience, momentum=args.momentum,
        bn_momentum=args.bn_momentum, weight_decay=args.weight_decay,
        batch_size=args.batch_size, seed=args.seed, device=args.device, rank=args.rank,
        rank_fraction=args.rank_fraction, max_rank=args.max_rank, compress=args.compress,
        val_fraction=args.val_fraction, train_limit=args.train_limit,
        test_limit=args.test_limit, max_steps=args.max_steps, threads=args.threads,
        out=str(args.out) if args.out else None,
        data_dir=str(args.data_dir) if args.data_dir else None, download=args.download,
        mirror=args.mirror, quiet=args.quiet, progress=False if args.no_progress else None,
        plots=not args.no_plots,
    )
    if args.resume and args.epochs is None:
        cfg.epochs = None  # type: ignore[assignment]  # keep the checkpoint's
    if not args.resume:
        cfg.validate()
    _check_out(Path(cfg.out or cfg.default_out()))
    record = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(format_summary(record), flush=True)
    return 0


def _load_model(path: Path):
    from .train import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(path)
    return state, model_from_checkpoint(state)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .train import evaluate, resolve_device

    state, model = _load_model(args.checkpoint)
    cfg = state["config"]
    name = args.dataset or cfg["dataset"]
    data_dir = args.data_dir or cfg.get("data_dir")
    train_set, test_set = load_dataset(name, data_dir, args.download,
                                       mirrors=[args.mirror] if args.mirror else None)
    data = test_set if args.split == "test" else train_set
    if tuple(data.image_shape) != tuple(state["shape"]):
        raise CommandError(f"dataset {name!r} has images of shape {data.image_shape}, the "
                           f"checkpoint expects {tuple(state['shape'])}")
    device = resolve_device(args.device)
    loss, acc = evaluate(model.to(device), data, args.batch_size, device)
    result = {"checkpoint": str(args.checkpoint), "dataset": name, "split": args.split,
              "images": len(data), "loss": loss, "accuracy": acc}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.checkpoint}: {name} {args.split} ({len(data)} images): accuracy "
              f"{100 * acc:.2f} %, loss {loss:.4f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import compression_report

    state, model = _load_model(args.checkpoint)
    rep = compression_report(model, input_shape=tuple(state["shape"]))
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1, default=str))
    else:
        cfg = state["config"]
        print(f"{args.checkpoint}: {cfg['model']} on {cfg['dataset']}, method {cfg['method']}"
              + (f", epoch {state['epoch']}" if "epoch" in state else ""))
        print(rep)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .convert import to_dense
    from .train import CHECKPOINT_VERSION, atomic_write_bytes, save_checkpoint

    state, model = _load_model(args.checkpoint)
    dense = to_dense(model).eval()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.torchscript:
        import io
        import warnings

        example = torch.zeros(1, *state["shape"])
        buf = io.BytesIO()
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.trace(dense, example), buf)
        atomic_write_bytes(args.output, buf.getvalue())
    else:
        save_checkpoint(args.output, {
            "version": CHECKPOINT_VERSION, "format": "dense", "config": state["config"],
            "shape": state["shape"], "num_classes": state["num_classes"],
            "model": dense.state_dict(),
        })
    n = sum(p.numel() for p in dense.parameters())
    print(f"wrote {args.output} ({'TorchScript' if args.torchscript else 'dense state dict'}, "
          f"{n} parameters)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_run

    metrics = args.run / "metrics.json" if args.run.is_dir() else args.run
    if not metrics.is_file():
        raise CommandError(f"{metrics} does not exist (give a run folder written by train)")
    out = args.out or (metrics.parent / "plots")
    _check_out(out)
    for path in plot_run(metrics, out):
        print(path)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_results, run_checks

    _check_out(args.out)
    results = run_checks(args.out, quick=args.quick, seed=args.seed, plots=not args.no_plots)
    print(json.dumps(results, indent=1, default=str) if args.json else format_results(results))
    return 0 if all(r["passed"] for r in results["checks"]) else 1


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .datasets import DatasetError
    from .train import TrainingError

    debug = os.environ.get("TUCKER_DLRA_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (a train run continues with --resume)", file=sys.stderr)
        return 130
    except (TrainingError, FloatingPointError) as exc:
        if debug:
            raise
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (CommandError, DatasetError, ValueError, TypeError, FileNotFoundError,
            PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
        if debug:
            raise
        msg = str(exc).replace("\n", " ") or type(exc).__name__
        print(f"{PROG} {args.command}: error: {msg}", file=sys.stderr)
        return USER_ERROR
