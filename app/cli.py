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

from tucker_dlra._io import ensure_writable_dir

__all__ = ["main", "build_parser"]

PROG = "tucker-dlra"
USER_ERROR = 2


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


EXPORT_FORMATS = ("state-dict", "torch-export", "onnx")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``[default]`` to every option's help that does not show it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and default is not None and default is not argparse.SUPPRESS
                and not isinstance(default, bool) and not text.rstrip().endswith("]")):
            text += " [%(default)s]"
        return text


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

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


class _RankFractionAction(argparse.Action):
    """Store ``--rank-fraction`` in the configuration's form (a float, or a tuple per mode),
    so that it compares equal to the value a checkpoint holds."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        from ._config import rank_fraction_value  # not at import: the app's modules need torch

        setattr(namespace, self.dest, rank_fraction_value(values))


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
    g.add_argument("--model", choices=sorted(MODELS), default="lenet5",
                   help="network architecture (the paper's Section 4)")
    g.add_argument("--dataset", choices=sorted(DATASETS), default="mnist-subset",
                   help="mnist-subset (shipped: 10k training images, 9k trained on and 1k for "
                   "validation by default, 2k test images of real MNIST), mnist, fashion-mnist, "
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
                   help="initial (TDLRT) or fixed (vanilla) rank of every mode, clipped per mode "
                   "[see --rank-fraction]")
    r.add_argument("--rank-fraction", type=_unit_interval("rank-fraction", True, False),
                   nargs="+", metavar="KAPPA", action=_RankFractionAction,
                   help="initial/fixed rank as a fraction kappa of each mode's size, or one "
                   "fraction per kernel mode (out in height width; e.g. 0.1 0.1 1 1 compresses "
                   "the channel modes only, Tucker-2) [vanilla: 0.5; TDLRT: full rank]")
    g.add_argument("--max-rank", type=_pos_int("max-rank"),
                   help="upper bound on every rank [no bound]")
    g.add_argument("--fixed-rank-epochs", type=_int, default=0, metavar="N",
                   help="TDLRT: train the first N epochs at the initial ranks (the fixed-rank "
                   "BUG step, no truncation), so that tau first chooses the ranks on a trained "
                   "core rather than on the random one [0: adapt from the first step]")
    g = t.add_argument_group("optimisation")
    g.add_argument("--epochs", type=_pos_int("epochs"), default=None,
                   help="training epochs (with --resume: the new total) [15]")
    g.add_argument("--lr", type=_pos_float("lr"), default=0.05, help="learning rate [0.05]")
    g.add_argument("--schedule", choices=list(SCHEDULES), default="plateau",
                   help="plateau: divide lr by 10 when the validation loss stalls; cosine: "
                   "cosine annealing over the epochs [plateau]")
    g.add_argument("--patience", type=_int, default=2,
                   help="epochs without improvement before the plateau schedule acts [2]")
    g.add_argument("--momentum", type=_unit_interval("momentum"), default=0.1,
                   help="Polyak momentum of the other parameters")
    g.add_argument("--bn-momentum", type=_unit_interval("bn-momentum"), default=0.9,
                   help="momentum of batch-norm parameters [0.9]")
    g.add_argument("--weight-decay", type=_nonneg_float("weight-decay"), default=0.0,
                   help="L2 weight decay")
    g.add_argument("--batch-size", type=_pos_int("batch-size"), default=128,
                   help="training batch size")
    g.add_argument("--seed", type=_int, default=0,
                   help="seed of the initialisation, the data order and the validation split")
    g.add_argument("--max-steps", type=_pos_int("max-steps"),
                   help="stop after this many optimizer steps (tiny runs) [no limit]")
    g.add_argument("--stop-lr", type=_pos_float("stop-lr"),
                   help="end the run early once the schedule has lowered the learning rate "
                   "below this value (the weights no longer move; the epochs run are "
                   "recorded) [train all epochs]")
    g = t.add_argument_group("data")
    g.add_argument("--data-dir", type=Path,
                   help="folder with the dataset files [none: only mnist-subset works]")
    g.add_argument("--download", action="store_true",
                   help="download missing files (MD5-verified) into DATA_DIR/<dataset>/")
    g.add_argument("--mirror", help="base URL to download from instead of the public mirrors "
                   "[the dataset's public mirrors]")
    g.add_argument("--val-fraction", type=_unit_interval("val-fraction"), default=0.1,
                   help="share of the training images held out for validation [0.1]")
    g.add_argument("--train-limit", type=_pos_int("train-limit"),
                   help="use only this many training images (before the validation split) [all]")
    g.add_argument("--test-limit", type=_pos_int("test-limit"),
                   help="use only this many test images [all]")
    g = t.add_argument_group("run")
    g.add_argument("--out", type=Path,
                   help="output folder [runs/<model>-<dataset>-<method>[-tau<tau>]-seed<seed>]")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (its settings are kept; only --epochs, "
                   "--max-steps, --stop-lr, --threads, --device, --data-dir, --mirror and the "
                   "output flags may be given, other flags that contradict it are an error)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an OUT that holds a checkpoint, replacing it (without "
                   "it, and without --resume, such an OUT is refused)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [auto]")
    g.add_argument("--threads", type=_pos_int("threads"),
                   help="torch CPU threads [torch's default]")
    g.add_argument("--quiet", action="store_true", help="print only the final summary")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint or an exported model on a dataset")
    e.add_argument("checkpoint", type=Path,
                   help="training checkpoint or a file written by export (any --format)")
    e.add_argument("--dataset", choices=sorted(DATASETS),
                   help="dataset to evaluate on [the checkpoint's dataset]")
    e.add_argument("--split", choices=["test", "train"], default="test",
                   help="which split to evaluate on")
    e.add_argument("--data-dir", type=Path,
                   help="folder with the dataset files [the checkpoint's --data-dir]")
    e.add_argument("--download", action="store_true",
                   help="download missing files (MD5-verified)")
    e.add_argument("--mirror", help="base URL to download from [the public mirrors]")
    e.add_argument("--batch-size", type=_pos_int("batch-size"), default=512,
                   help="evaluation batch size")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="ranks and compression table of a checkpoint")
    r.add_argument("checkpoint", type=Path, help="training checkpoint (RUN/checkpoint.pt)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_report)

    x = sub.add_parser("export", help="write the model of a checkpoint for deployment",
                       description="state-dict: the dense model's plain state dict (loads with "
                       "model.load_state_dict(torch.load(OUTPUT))), its metadata in OUTPUT.json; "
                       "torch-export: torch.export ExportedProgram of the dense model "
                       "(torch.export.load); onnx: ONNX graph of the compressed (factorized) "
                       "model (needs onnx, onnxscript; run it with onnxruntime).")
    x.add_argument("checkpoint", type=Path, help="training checkpoint (RUN/checkpoint.pt)")
    x.add_argument("output", type=Path, help="output file (must not be a checkpoint)")
    x.add_argument("--format", choices=list(EXPORT_FORMATS), default="state-dict",
                   help="what to write (see above)")
    x.set_defaults(func=cmd_export)

    pl = sub.add_parser("plot", help="redraw the PNG figures of a run folder")
    pl.add_argument("run", type=Path, help="run folder (holding metrics.json)")
    pl.add_argument("--out", type=Path, help="figure folder [RUN/plots]")
    pl.set_defaults(func=cmd_plot)

    v = sub.add_parser("verify", help="check the integrators against the paper's theorems on "
                       "synthetic problems, with plots")
    from tucker_dlra.verify import add_arguments as verify_arguments

    verify_arguments(v)
    v.set_defaults(func=cmd_verify)
    return p


# --------------------------------------------------------------------------- commands
def _check_out(path: Path) -> None:
    """Create ``path`` and make sure a file can be written there (else CommandError)."""
    try:
        ensure_writable_dir(path)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


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
        rank_fraction=args.rank_fraction, max_rank=args.max_rank,
        fixed_rank_epochs=args.fixed_rank_epochs, compress=args.compress,
        val_fraction=args.val_fraction, train_limit=args.train_limit,
        test_limit=args.test_limit, max_steps=args.max_steps, stop_lr=args.stop_lr,
        threads=args.threads,
        out=str(args.out) if args.out else None,
        data_dir=str(args.data_dir) if args.data_dir else None, download=args.download,
        mirror=args.mirror, quiet=args.quiet, progress=False if args.no_progress else None,
        plots=not args.no_plots,
    )
    if args.resume and args.overwrite:
        raise CommandError("give --resume (continue the run in OUT) or --overwrite (replace it), "
                           "not both")
    if args.resume and args.epochs is None:
        cfg.epochs = None  # type: ignore[assignment]  # keep the checkpoint's
    if not args.resume:
        cfg.validate()
    out = Path(cfg.out or cfg.default_out())
    if args.resume:
        _check_resume_flags(args, out)
    _check_out(out)
    record = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(format_summary(record), flush=True)
    return 0


#: train flags that --resume takes from the command line instead of the checkpoint
_RESUME_OVERRIDES = {"epochs", "max_steps", "stop_lr", "threads", "device", "data_dir", "mirror",
                     "download", "quiet", "no_progress", "no_plots", "out", "resume", "overwrite"}


def _explicit_train_flags(argv: Sequence[str]) -> dict[str, object]:
    """The ``train`` options given on the command line (dest -> value), defaults left out."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["train"]._actions:
        action.default = argparse.SUPPRESS
    return {k: v for k, v in vars(parser.parse_args(list(argv))).items()
            if k not in ("command", "func")}


def _flag_text(v: object) -> str:
    """A flag's value as typed (``0.1 0.1 1 1`` for a per-mode rank fraction)."""
    if isinstance(v, (list, tuple)):
        return " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def _check_resume_flags(args: argparse.Namespace, out: Path) -> None:
    """With --resume, every explicit flag that contradicts the checkpoint is an error."""
    from .train import CHECKPOINT, load_checkpoint

    path = out / CHECKPOINT
    if not path.is_file() or getattr(args, "argv", None) is None:
        return  # train() reports the missing checkpoint
    saved = load_checkpoint(path)["config"]
    clashes = []
    for dest, value in _explicit_train_flags(args.argv).items():
        if dest in _RESUME_OVERRIDES or dest not in saved:
            continue
        if saved[dest] != value:
            flag = "--" + dest.replace("_", "-")
            clashes.append(f"{flag} {_flag_text(value)} (checkpoint: "
                           f"{_flag_text(saved[dest])})")
    if clashes:
        raise CommandError(f"--resume continues {path} with its own settings; these flags "
                           f"contradict it: {', '.join(clashes)} (drop them, or start a new run "
                           "with --overwrite or another --out)")


def _load_model(path: Path):
    from .train import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(path)
    return state, model_from_checkpoint(state, source=path)


class _ExportedModel:
    """An exported model (ONNX session or torch.export program) behind the interface of
    :func:`tucker_dlra.app.train.evaluate`: ``model(x)``, ``training``, ``train()``, ``eval()``,
    ``to()``; it always runs in inference mode."""

    training = False

    def __init__(self, run) -> None:
        self._run = run

    def __call__(self, x):
        return self._run(x)

    def train(self, mode: bool = True) -> _ExportedModel:
        return self

    def eval(self) -> _ExportedModel:
        return self

    def to(self, device) -> _ExportedModel:
        return self


def _load_any(path: Path):
    """(metadata, model) of a training checkpoint or of any file ``export`` writes."""
    from .train import CheckpointError, metadata_path

    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".pt2"):
        return _load_model(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    meta_file = metadata_path(path)
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: its metadata file {meta_file} is missing or not JSON "
                              f"({exc})") from None
    import torch

    if suffix == ".pt2":
        try:
            program = torch.export.load(path).module()
        except Exception as exc:  # noqa: BLE001 - any failure means a bad file
            raise CheckpointError(f"{path} is not a readable torch.export program "
                                  f"({str(exc).splitlines()[0] if str(exc) else exc})") from None

        def run(x):
            return program(x.to("cpu"))

        return meta, _ExportedModel(run)
    try:
        import onnxruntime as ort
    except ImportError:
        raise CommandError("evaluating an ONNX model needs onnxruntime: pip install "
                           "onnxruntime") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable ONNX model ({exc})") from None
    name = session.get_inputs()[0].name

    def run_onnx(x):
        x = x.detach().to("cpu", torch.float32)
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return meta, _ExportedModel(run_onnx)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .train import evaluate, resolve_device

    state, model = _load_any(args.checkpoint)
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
    from tucker_dlra.nn.report import compression_report

    from .train import CheckpointError, TrainConfig, build_optimizer

    state, model = _load_model(args.checkpoint)
    opt = None
    if state.get("format", "train") == "train" and state.get("optimizer"):
        known = {f for f in TrainConfig.__dataclass_fields__}
        cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in known})
        opt = build_optimizer(model, cfg)
        try:
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{args.checkpoint}: the optimizer state does not match the "
                                  f"model ({str(exc).splitlines()[0]})") from None
    rep = compression_report(model, input_shape=tuple(state["shape"]), optimizer=opt)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1, default=str))
    else:
        cfg = state["config"]
        print(f"{args.checkpoint}: {cfg['model']} on {cfg['dataset']}, method {cfg['method']}"
              + (f", epoch {state['epoch']}" if "epoch" in state else ""))
        print(rep)
    return 0


def _refuse_checkpoint_output(args: argparse.Namespace) -> None:
    """``export`` never writes over its input nor over any run's checkpoint."""
    from .train import CHECKPOINT, CheckpointError, load_checkpoint

    src, dst = args.checkpoint, args.output
    if dst.is_dir():
        raise CommandError(f"output {dst} is a folder; give a file name")
    if dst.name == CHECKPOINT or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
        raise CommandError(f"output {dst} would replace a training checkpoint; give another file")
    if dst.is_file() and dst.suffix.lower() not in (".onnx", ".pt2", ".json"):
        try:
            is_run = load_checkpoint(dst).get("format", "train") == "train"
        except (CheckpointError, FileNotFoundError):
            is_run = False
        if is_run:
            raise CommandError(f"output {dst} is a training checkpoint; give another file")


def cmd_export(args: argparse.Namespace) -> int:
    import torch
    from tucker_dlra.nn.convert import to_dense

    from .train import atomic_write_bytes, atomic_write_text, metadata_path

    _refuse_checkpoint_output(args)
    state, model = _load_model(args.checkpoint)
    if state.get("format", "train") != "train":
        raise CommandError(f"{args.checkpoint} is already an exported model; export a training "
                           "checkpoint (RUN/checkpoint.pt)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": state["config"], "shape": list(state["shape"]),
            "num_classes": int(state["num_classes"]), "source": str(args.checkpoint),
            "export_format": args.format}
    example = torch.zeros(2, *state["shape"])  # batch 2: a batch of 1 would be specialised
    import io

    buf = io.BytesIO()
    if args.format == "onnx":
        written = _export_onnx(model.eval(), example)
        n = sum(p.numel() for p in model.parameters())
        what = "ONNX of the factorized model"
    else:
        dense = to_dense(model).eval()
        n = sum(p.numel() for p in dense.parameters())
        if args.format == "torch-export":
            batch = torch.export.Dim("batch")
            torch.export.save(torch.export.export(dense, (example,),
                                                  dynamic_shapes=({0: batch},)), buf)
            what = "torch.export program of the dense model"
        else:
            torch.save(dense.state_dict(), buf)
            what = "dense state dict"
        written = buf.getvalue()
    atomic_write_text(metadata_path(args.output), json.dumps(meta, indent=1) + "\n")
    atomic_write_bytes(args.output, written)
    print(f"wrote {args.output} ({what}, {n} parameters) and {metadata_path(args.output)}")
    return 0


def _export_onnx(model, example) -> bytes:
    """ONNX bytes of ``model`` (factorized forward, batch dimension dynamic)."""
    import tempfile

    import torch

    for m in model.modules():  # the compressed graph: core and factors, not the dense kernel
        if hasattr(m, "forward_mode"):
            m.forward_mode = "factorized"
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CommandError("--format onnx needs onnx and onnxscript: pip install "
                           "'tucker-dlra[nn]' onnx onnxscript") from None
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # optional torchvision ops
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # raised inside torch's exporter
        path = Path(tmp) / "model.onnx"
        batch = torch.export.Dim("batch")
        torch.onnx.export(model, (example,), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
                          external_data=False, verbose=False)
        return path.read_bytes()


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
    from tucker_dlra.verify import run_command

    _check_out(args.out)
    return run_command(args)


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
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
