"""How a run's training steps execute: eagerly, or on CUDA as one captured CUDA graph.

A step is forward, loss, backward and the optimiser's update for one batch; the one-cycle
rate and the weight average follow it. A tiny CNN's step is a few hundred small kernels, so
on a GPU the launches, not the arithmetic, set its time. With `cuda_graph` on (the default)
the whole step is captured once and replayed for every full batch:

- the batch is copied into static buffers the graph reads (`static_x`, `static_y`);
- the optimiser reads its learning rate and AdamW's beta1 from device tensors, refilled
  between replays by the one-cycle schedule (a float would be frozen into the graph);
  AdamW runs with `capturable=True`, SGD with `fused=True`;
- the epoch's loss and accuracy sums accumulate on the device inside the graph (no sync);
- the first `WARMUP_STEPS` steps of a run, and the last, smaller batch of every epoch, run
  eagerly through the same optimiser and the same tensors: every image is trained on, in
  the order a CPU run trains it, and no batch is padded or dropped;
- if capture fails (an op or an optimiser it cannot take), the run says so in one line
  and goes on eagerly with the fused optimiser's arithmetic.

CPU runs stay eager with torch's default optimisers: their numbers are pinned by tests.
`precision="bf16"` autocasts forward and loss to bfloat16 (weights and updates stay fp32).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache

import torch

from tune_mnist import machine
from tune_mnist.train.config import TrainConfig

WARMUP_STEPS = 3  # eager steps before capture: lazy state (optimiser moments) exists by then

# (images, target) -> (the loss to differentiate, per-member loss sums, per-member correct)
Compute = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def graphed(config: TrainConfig, device: torch.device) -> bool:
    return device.type == "cuda" and config.cuda_graph


def optimizer_options(config: TrainConfig, device: torch.device) -> dict[str, bool]:
    """Extra optimiser arguments on CUDA: capturable AdamW under a graph, else fused kernels
    (one launch for all parameters); none on CPU, whose results the tests pin."""
    if device.type != "cuda":
        return {}
    if graphed(config, device) and config.optimizer == "adamw":
        return {"capturable": True}
    return {"fused": True}


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast where the device has bfloat16 arithmetic: any CUDA device torch runs
    on, a CPU with AVX512-BF16 or AMX (else torch emulates it, slower than fp32); one line
    on stderr, once per process, where it falls back."""
    if device.type != "cpu":
        return True
    if machine.cpu_flags() & CPU_BF16_FLAGS:
        return True
    _say_once(
        "tune_mnist: precision bf16 asked, but this CPU has no bfloat16 instructions "
        f"({' or '.join(sorted(CPU_BF16_FLAGS))}); training in fp32"
    )
    return False


CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 (Linux), Arm "bf16"


@cache
def _say_once(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Steps:
    """Runs the training steps of one run (a single model or a fused cohort) and keeps the
    epoch's loss and accuracy sums on the device; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        state,
        compute: Compute,
        device: torch.device,
    ):
        self.state, self.compute = state, compute
        self.batch_size = config.batch_size
        self.graphed = graphed(config, device)
        self.bf16 = config.precision == "bf16" and bf16_supported(device)
        self.device = device
        self.loss_sum: torch.Tensor | None = None  # shaped by the first step's sums
        self.correct: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        self.betas = _rates_on_device(state.optimizer, device) if self.graphed else None
        if not self.graphed:
            _rates_as_floats(state.optimizer)

    @property
    def precision(self) -> str:
        """What the steps run in: the config's precision, or fp32 where bf16 fell back."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def replaying(self) -> bool:
        """True once the step runs from a captured graph."""
        return self.graph is not None

    def begin_epoch(self) -> None:
        if self.loss_sum is not None:
            self.loss_sum.zero_()
            self.correct.zero_()

    def __call__(self, images: torch.Tensor, target: torch.Tensor) -> None:
        if not self.graphed or len(target) != self.batch_size:
            self._eager(images, target)
        elif self.graph is not None:
            self.static_x.copy_(images)
            self.static_y.copy_(target)
            self.graph.replay()
        elif self.eager_steps < WARMUP_STEPS:
            self._warm_up(images, target)
        else:
            self._capture(images, target)
        self._after_update()

    def _warm_up(self, images: torch.Tensor, target: torch.Tensor) -> None:
        if self.device.type != "cuda":
            self._eager(images, target)
            return
        side = torch.cuda.Stream(self.device)  # warm-up on a side stream, as capture wants
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._eager(images, target)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _autocast(self):
        # cache off: a cached bf16 weight copy would go stale between graph replays
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False
        )

    def _forward(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            loss, loss_sums, correct = self.compute(images, target)
        if self.loss_sum is None:
            self.loss_sum = torch.zeros_like(loss_sums, dtype=torch.float32)
            self.correct = torch.zeros_like(correct)
        self.loss_sum += loss_sums
        self.correct += correct
        return loss

    def _eager(self, images: torch.Tensor, target: torch.Tensor) -> None:
        loss = self._forward(images, target)
        self.state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.state.optimizer.step()
        self.eager_steps += 1

    def _capture(self, images: torch.Tensor, target: torch.Tensor) -> None:
        """Record forward, backward, update and the sums for a full batch, then replay the
        recording once: capturing runs nothing, so that replay trains this batch."""
        self.static_x, self.static_y = images.clone(), target.clone()
        self.state.optimizer.zero_grad(set_to_none=True)  # grads then live in the graph's pool

        def body() -> None:
            loss = self._forward(self.static_x, self.static_y)
            loss.backward()
            self.state.optimizer.step()

        try:
            graph = self.record(body)
        except Exception as exc:  # noqa: BLE001 - any failure: say so, train eagerly
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(
                f"tune_mnist: CUDA graph capture failed ({type(exc).__name__}: {first}); "
                "training eagerly",
                file=sys.stderr,
                flush=True,
            )
            self.graphed = False
            self._eager(images, target)
            return
        self.graph = graph
        graph.replay()

    @staticmethod
    def record(body: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Capture `body` in a CUDA graph."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        return graph

    def _after_update(self) -> None:
        self.state.scheduler.step()
        if self.betas is not None:  # the schedule wrote beta1 as a float: back to the tensor
            for group, (beta1, beta2) in zip(
                self.state.optimizer.param_groups, self.betas, strict=True
            ):
                beta1.fill_(group["betas"][0])
                group["betas"] = (beta1, beta2)
        if self.state.ema is not None:
            self.state.ema.update_parameters(self.state.model)


def _rates_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> list | None:
    """Learning rates (and AdamW's betas) as device tensors a graph reads at each replay;
    returns the beta tensors per group (None for SGD). Float rates made here from a
    checkpoint's tensors or floats: a resumed run captures its graph afresh."""
    betas = []
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        if "betas" in group:
            pair = tuple(torch.tensor(float(b), device=device) for b in group["betas"])
            group["betas"] = pair
            betas.append(pair)
    return betas or None


def _rates_as_floats(optimizer: torch.optim.Optimizer) -> None:
    """Eager runs keep float rates; a checkpoint written by a graphed run holds tensors."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = float(group["lr"])
        if "betas" in group and isinstance(group["betas"][0], torch.Tensor):
            group["betas"] = tuple(float(b) for b in group["betas"])
