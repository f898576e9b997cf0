"""Forward path choice of the Tucker layers: the FLOP rule's constants, the measured choice
(:class:`PathSelector`, :data:`PATH_SELECTOR`) and the optimizer-step counter of the kernel
cache (see :mod:`tucker_dlra.nn.layers`)."""

from __future__ import annotations

import numbers
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

#: ``forward_mode="auto"`` takes the factorized path when its multiply-add count per
#: sample is below this fraction of the dense convolution's (the factorized path runs up
#: to three convolutions instead of one, so it needs a clear FLOP advantage to be faster).
#: In training mode with gradient capture the counts compared are forward + backward:
#: :math:`3 f + d` (the captured :math:`G` costs one dense weight-gradient product) against
#: :math:`3 d`.  Measured on one CPU thread (float32): 256->256 3x3 at ranks
#: (57, 57, 3, 3), 16x16 input, FLOP ratio 0.11: forward 5x faster, training forward +
#: backward 2.2x faster; 20->50 5x5 at ranks (20, 20, 5, 5) (ratio 0.48) is slower in
#: training (1.14x), hence the training rule.
#: With the kernel-only backward (``param_grads=False``, TDLRT) backward computes no factor
#: gradients: the counts are :math:`k f + d` against :math:`(k + 1) d` with :math:`k = 2`
#: (:math:`k = 1` when the input needs no gradient, e.g. the first layer), compared with
#: :data:`KERNEL_ONLY_FLOP_RATIO`.
FACTORIZED_FLOP_RATIO = 0.5

#: Ratio of the kernel-only training rule.  Measured (1 thread, batch 128, float32,
#: forward + backward): VGG 3->32 3x3 at 32x32, ranks (7, 1, 3, 3), FLOP ratio 0.34 and no
#: input gradient: factorized 27 ms, dense 53 ms (counts 1.34 d vs 2 d: 0.67); LeNet5's
#: 1->20 5x5, ranks (5, 1, 5, 5), ratio 0.45: factorized 8.5 ms, dense 5.7 ms (0.73); the
#: 3x3 layers at ratio 0.1 with input gradient: factorized 1.5-2.2x faster.
KERNEL_ONLY_FLOP_RATIO = 0.7


#: Device types on which the 2-d factorized path writes its output channels-last in
#: training too (without a graph it always does: see ``pointwise``).  The downstream batch
#: norm, ReLU and pooling then run their channels-last kernels, and the captured kernel
#: gradient :math:`G` is a weight-gradient convolution of two channels-last tensors.
#: The first 1x1 stage keeps the input's layout in training, so that the input gradient
#: has the layout of the upstream tensors (a channels-last gradient into contiguous pooling
#: costs a copy).  Measured on one CPU thread, batch 128, the VGG stack of
#: ``validation/bench_nn_step.py`` at 90 % conv compression: forward 105 -> 52 ms, TDLRT
#: step / dense step 0.80-0.84x -> 0.63-0.66x; LeNet5 (no batch norm) 0.98-1.13x ->
#: 0.77-1.03x (noisy).  Not yet measured on CUDA, hence CPU only.
TRAIN_CHANNELS_LAST: tuple[str, ...] = ("cpu",)


#: ... and only when the dense count is at least this many multiply-adds per sample:
#: below it the extra kernel launches dominate.  Since the 1x1 stages run as batched GEMMs
#: with the bias fused into the last stage, small layers gain too (measured, inference,
#: 1 thread, batch 128: LeNet5's 1->20 5x5 at ranks (5, 1, 5, 5), 0.29M MACs, FLOP ratio
#: 0.45: factorized 1.6 ms, dense 2.8 ms; VGG's 3->32 3x3 at 32x32, 0.88M MACs, ratio
#: 0.34: 4.1 ms against 21 ms for ``nn.Conv2d``); the former bound 1e6 predates that.
FACTORIZED_MIN_FLOPS = 100_000

#: Bumped after every ``torch.optim`` optimizer step (a global step post-hook): part of
#: every layer's kernel-cache key, so no kernel cached before a step is reused after it,
#: whatever way the optimizer writes the parameters.
_STEP_GENERATION = [0]


def _bump_generation(*_args: Any) -> None:
    _STEP_GENERATION[0] += 1


register_optimizer_step_post_hook(_bump_generation)


def cuda_event_timer(path: str, fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``: CUDA events on a CUDA device, else ``perf_counter``.

    ``path`` (the candidate's name) is unused; it lets a test inject a deterministic timer.
    Cost: one call of ``fn`` and one synchronisation.
    """
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class PathSelector:
    """Process-wide measured choice between forward paths, like cuDNN's benchmark mode.

    Parameters
    ----------
    devices : iterable of str
        Device types on which the choice is measured (default ``("cuda",)``); elsewhere
        :meth:`enabled` is False and the layers use their FLOP rule.
    repeats : int
        Timed calls per candidate (after one untimed warm-up call each), interleaved; the
        candidate with the smallest median wins, ties go to the first candidate.
    timer : callable ``(path, fn, device) -> seconds``, optional
        Times one call; default :func:`cuda_event_timer`.

    Notes
    -----
    Cost of a first use of a key: ``repeats + 1`` calls of every candidate and
    ``repeats * len(candidates)`` device synchronisations; afterwards one dict lookup.
    ``choices`` maps key -> chosen path, ``timings`` key -> {path: median seconds}.
    """

    def __init__(self, devices: Sequence[str] = ("cuda",), repeats: int = 5,
                 timer: Callable[[str, Callable[[], Any], torch.device], float] | None = None
                 ) -> None:
        if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1; got {repeats!r}")
        self.devices = frozenset(str(d) for d in devices)
        self.repeats = int(repeats)
        self.timer = timer if timer is not None else cuda_event_timer
        self.choices: dict[tuple, str] = {}
        self.timings: dict[tuple, dict[str, float]] = {}

    def enabled(self, device: torch.device) -> bool:
        """Whether choices on ``device`` are measured (not while compiling or capturing)."""
        if device.type not in self.devices:
            return False
        if torch.compiler.is_compiling():
            return False
        return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())

    def choose(self, key: tuple, candidates: dict[str, Callable[[], Any]]
               | Callable[[], dict[str, Callable[[], Any]]], device: torch.device) -> str:
        """The cached choice for ``key``, measuring the ``candidates`` on first use
        (``candidates`` may be a function returning them, called only then)."""
        hit = self.choices.get(key)
        if hit is not None:
            return hit
        if callable(candidates):
            candidates = candidates()
        for fn in candidates.values():  # warm-up: cuDNN autotuning, caches, allocations
            fn()
        samples: dict[str, list[float]] = {p: [] for p in candidates}
        for _ in range(self.repeats):
            for p, fn in candidates.items():
                samples[p].append(float(self.timer(p, fn, device)))
        med = {p: statistics.median(v) for p, v in samples.items()}
        best = min(med, key=lambda p: med[p])  # first minimum: ties keep the order
        self.timings[key] = med
        self.choices[key] = best
        return best

    def clear(self) -> None:
        """Forget all measured choices (e.g. after changing cuDNN settings)."""
        self.choices.clear()
        self.timings.clear()


#: The selector the Tucker layers consult (replace it, or its ``timer``/``devices``, to
#: change where and how paths are measured).
PATH_SELECTOR = PathSelector()
