"""The step runner (steps.py): its CUDA-graph control flow, checked on a CPU.

No CUDA here, so a recorder that keeps the step's body and re-runs it on `replay` stands in
for a CUDA graph. What is checked is everything around capture: device-tensor rates that the
schedule refills (lr, AdamW's beta1), warm-up, the eager last batch, sums kept across
replays, the fall-back when capture fails, a checkpoint's tensor rates on an eager run, the
whole-epoch augmentation, and bf16. Whether CUDA itself replays correctly is checked on a
GPU by scripts/gpu_check.py.
"""

import pytest
import torch

import tune_mnist.train.state as state_module
import tune_mnist.train.steps as steps_module
import tune_mnist.train.stream as stream_module
from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import ConfigError, TrainConfig
from tune_mnist.train.loop import loss_fn, train_epoch
from tune_mnist.train.state import make_state, prepare_run
from tune_mnist.train.steps import Steps
from tune_mnist.train.stream import training_batches

CPU = torch.device("cpu")
QUICK = {"train_subset": 2000, "test_subset": 500, "device": "cpu", "threads": 1, "epochs": 2}


class CpuGraph:
    """Replays a recorded step by running it again. A CUDA graph's backward writes fresh
    gradients on every replay, hence the zeroing; capture itself runs nothing, as on CUDA."""

    def __init__(self, body, optimizer):
        self.body, self.optimizer, self.replays = body, optimizer, 0

    def replay(self):
        self.optimizer.zero_grad(set_to_none=True)
        self.body()
        self.replays += 1


def run(config, mnist, monkeypatch, graph, record=None, epochs=None):
    """Two epochs of `config` with fused AdamW (the optimiser a CUDA run uses where the graph
    is off); `graph` routes the steps through the graph path with a CPU recorder."""
    monkeypatch.setattr(state_module, "optimizer_options", lambda c, d: {"fused": True})
    _, data, spec = prepare_run(config, mnist)
    state = make_state(config, CPU, len(data.train_y))
    compute, epoch = loss_fn(config, state.model), train_epoch
    graphs = []
    recorder = record or (lambda body: graphs.append(CpuGraph(body, state.optimizer)) or graphs[-1])
    monkeypatch.setattr(Steps, "record", staticmethod(recorder))  # a CPU stands in for CUDA
    monkeypatch.setattr(steps_module, "graphed", lambda config, device: graph)
    steps = Steps(config, state, compute, CPU)
    sums = [epoch(config, state, data, spec, steps) for _ in range(epochs or config.epochs)]
    return state, steps, sums, graphs


@pytest.mark.parametrize("cohort", [1, 2])
def test_the_graph_path_trains_as_the_eager_path(mnist, monkeypatch, cohort):
    config = TrainConfig(arch="lean", dropout=0.0, max_lr=0.005, cohort=cohort, **QUICK)
    floats, *_ = run(config, mnist, monkeypatch, graph=False)
    monkeypatch.setattr(steps_module, "WARMUP_STEPS", 10**6)  # tensor rates, never captured
    eager, eager_steps, eager_sums, _ = run(config, mnist, monkeypatch, graph=True)
    monkeypatch.setattr(steps_module, "WARMUP_STEPS", 3)
    state, steps, sums, graphs = run(config, mnist, monkeypatch, graph=True)
    # 16 batches an epoch (15 of 128, one of 80): 3 warm-up and the 2 short ones eager,
    # the 4th captured (and replayed), the other 26 replayed
    assert steps.replaying and len(graphs) == 1
    assert steps.eager_steps == 3 + 2 and graphs[0].replays == 32 - steps.eager_steps
    assert eager_steps.eager_steps == 32 and not eager_steps.replaying
    for (loss, acc), (eager_loss, eager_acc) in zip(sums, eager_sums, strict=True):
        assert torch.equal(loss, eager_loss) and torch.equal(acc, eager_acc)
    for key, value in eager.model.state_dict().items():
        assert torch.equal(state.model.state_dict()[key], value), key
    # the schedule's rates reach the tensors the graph reads (float32 copies of its floats)
    group, float_group = state.optimizer.param_groups[0], floats.optimizer.param_groups[0]
    assert isinstance(group["lr"], torch.Tensor) and isinstance(group["betas"][0], torch.Tensor)
    assert group["lr"].item() == pytest.approx(float_group["lr"], rel=1e-6)
    assert group["betas"][0].item() == pytest.approx(float_group["betas"][0], rel=1e-6)
    assert group["betas"][0].item() != pytest.approx(0.95)  # the cycle reached the tensor


def test_a_failed_capture_says_so_and_trains_eagerly(mnist, monkeypatch, capsys):
    def refuse(body):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    config = TrainConfig(arch="lean", dropout=0.0, max_lr=0.005, **QUICK)
    state, steps, sums, _ = run(config, mnist, monkeypatch, graph=True, record=refuse)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tune_mnist: CUDA graph capture failed (RuntimeError: operation not permitted when "
        "stream is capturing); training eagerly"
    ]
    assert not steps.replaying and not steps.graphed and steps.eager_steps == 32
    assert 0 < sums[-1][0].item() < 2.3 and sums[-1][1].item() > 50


def test_a_graphed_runs_checkpoint_resumes_on_an_eager_cpu_run(mnist, monkeypatch):
    config = TrainConfig(arch="lean", dropout=0.0, max_lr=0.005, **QUICK)
    state, *_ = run(config, mnist, monkeypatch, graph=True, epochs=1)
    saved = state.state_dict()
    assert isinstance(saved["optimizer"]["param_groups"][0]["lr"], torch.Tensor)
    monkeypatch.undo()  # torch's default (foreach) AdamW, which refuses tensor rates
    _, data, spec = prepare_run(config, mnist)
    fresh = make_state(config, CPU, len(data.train_y))
    fresh.load_state_dict(saved)
    steps = Steps(config, fresh, loss_fn(config, fresh.model), CPU)
    assert isinstance(fresh.optimizer.param_groups[0]["lr"], float)
    loss, _ = train_epoch(config, fresh, data, spec, steps)
    assert 0 < loss.item() < 2.3


def test_cpu_runs_keep_torchs_default_optimiser_and_float_rates(mnist):
    config = TrainConfig(arch="lean", **QUICK)
    state = make_state(config, CPU, 2000)
    steps = Steps(config, state, loss_fn(config, state.model), CPU)
    assert not steps.graphed
    group = state.optimizer.param_groups[0]
    assert not group["fused"] and not group["capturable"] and isinstance(group["lr"], float)


def test_bf16_autocasts_the_forward_pass(mnist):
    fp32 = TrainConfig(arch="lean", **{**QUICK, "epochs": 1})
    results = {}
    for config in (fp32, fp32.replace(precision="bf16")):
        _, data, spec = prepare_run(config, mnist)
        state = make_state(config, CPU, len(data.train_y))
        results[config.precision] = train_epoch(config, state, data, spec)
    (loss32, acc32), (loss16, acc16) = results["fp32"], results["bf16"]
    assert loss16.item() != loss32.item()  # not the fp32 arithmetic, yet it learns as well
    assert abs(loss16.item() - loss32.item()) < 0.1 and abs(acc16.item() - acc32.item()) < 5
    with pytest.raises(ConfigError, match="precision='fp16' is not known: valid names are fp32"):
        fp32.replace(precision="fp16")


def test_the_whole_epoch_augmentation_gives_the_per_batch_images(mnist, monkeypatch):
    monkeypatch.setattr(stream_module, "WARP_CHUNK", 700)  # 4 chunks of 8 batches of 96
    warps = {"shear_deg": 5.0, "perspective": 0.2, "perspective_p": 0.5}  # every kind on
    photometric = {"brightness": 0.2, "contrast": 0.3, "photometric_p": 0.5}
    config = TrainConfig(batch_size=96, **warps, **photometric)
    data, spec = mnist.subset(3000, 10), AugmentSpec.from_config(config)
    streams = []
    for whole in (False, True):
        generator = torch.Generator().manual_seed(3)
        streams.append((list(training_batches(config, data, generator, spec, whole)), generator))
    (per_batch, g1), (whole_epoch, g2) = streams
    assert len(per_batch) == len(whole_epoch) == 32
    for (i1, x1, y1), (i2, x2, y2) in zip(per_batch, whole_epoch, strict=True):
        assert torch.equal(i1, i2) and torch.equal(y1, y2) and torch.equal(x1, x2)
    assert torch.equal(g1.get_state(), g2.get_state())  # the next epoch draws the same
