from pathlib import Path

import optuna
import pytest

from tune_mnist.search.flags import check_name
from tune_mnist.search.plan import UsageError, plan_resources
from tune_mnist.search.space import SpaceError
from tune_mnist.search.space_file import load_space

ROOT = Path(__file__).resolve().parents[1]

BASE = """
settings: {epochs: 3, grace_period: 1, samples: 4}
params:
  max_lr: {loguniform: [0.01, 0.05]}
arch:
  super_light: {}
  tiny:
    width1: {int: [4, 8]}
    squeeze: {choice: [true, false]}
"""


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


SPACES = ROOT / "search_spaces"
SHIPPED = sorted(str(p.relative_to(SPACES)) for p in SPACES.rglob("*.yaml"))


def test_the_main_spaces_are_shipped():  # the glob below must not pass by finding nothing
    assert {"default.yaml", "smoke.yaml", "campaign3_8k.yaml"} <= set(SHIPPED)
    assert {"experiments/lean.yaml", "experiments/separable_8k_b.yaml"} <= set(SHIPPED)


def test_every_space_is_listed_in_the_folders_readme_with_its_results():
    readme = (SPACES / "README.md").read_text()
    for name in SHIPPED:
        assert f"`{name}`" in readme, name
    for meta in sorted((ROOT / "results").glob("*/search.json")):  # each record resolves
        assert (meta.parent / "space.yaml").is_file(), meta.parent.name
        assert f"`results/{meta.parent.name}`" in readme, meta.parent.name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_load(name):
    space = load_space(SPACES / name)
    assert space.settings["samples"] >= 2
    # every shipped space selects and stops on held-out training images, never on test
    assert space.settings["metric"].startswith("val_")
    assert (space.settings["asha_metric"] or "val_").startswith("val_")
    assert space.settings["val_size"] >= 1000
    config = space.train_config({"arch": sorted(space.branches)[0]})
    assert config.val_size == space.settings["val_size"]


@pytest.mark.parametrize("key", ["metric", "asha_metric"])
@pytest.mark.parametrize("metric", ["test_acc", "test_acc_avg3", "test_loss"])
def test_a_test_metric_is_refused(tmp_path, key, metric):
    path = tmp_path / "s.yaml"
    path.write_text(f"settings: {{{key}: {metric}}}\narch: {{super_light: {{}}}}\n")
    with pytest.raises(SpaceError, match="never selected on"):
        load_space(path)


@pytest.mark.parametrize("size", [0, 50, 30001, "5000", 2.5])
def test_val_size_must_hold_out_images(tmp_path, size):
    path = tmp_path / "s.yaml"
    path.write_text(f"settings: {{val_size: {size!r}}}\narch: {{super_light: {{}}}}\n")
    with pytest.raises(SpaceError, match="val_size"):
        load_space(path)


def test_val_size_is_owned_by_the_settings(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("fixed: {val_size: 0}\narch: {super_light: {}}\n")
    with pytest.raises(SpaceError, match="unknown key"):
        load_space(path)


def test_conditional_space_never_leaks_branch_params(tmp_path):
    space = load_space("search_spaces/default.yaml")
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True)
    )
    seen = set()
    for i in range(60):
        trial = study.ask()
        constants = space.define_by_run(trial)
        values = {**trial.params, **constants}
        arch = values["arch"]
        seen.add(arch)
        branch_keys = {k for k in values if ":" in k}
        assert all(k.startswith(f"{arch}:") for k in branch_keys), (arch, branch_keys)
        config = space.train_config(values)  # every sample is a valid TrainConfig
        assert config.arch == arch.split("-")[0]
        assert config.separable_late == (arch == "lean-late")  # the variant's constant
        if arch not in ("tiny", "lean", "lean-late"):
            assert not branch_keys
        study.tell(trial, float(i % 7))
    assert seen == {"super_light", "light", "lightest", "tiny", "lean", "lean-late"}


def test_points_use_branch_names():
    space = load_space("search_spaces/experiments/tiny.yaml")
    for point, written in zip(space.optuna_points(), space.points, strict=True):
        assert point["tiny:width1"] == written["width1"] and "width1" not in point
        assert point["max_lr"] == written["max_lr"]  # shared fields keep their names


@pytest.mark.parametrize(
    "change, message",
    [
        ("params:\n  max_lr: {loguniform: [0.05, 0.01]}", r"params\.max_lr\.loguniform: low"),
        ("params:\n  dropout: {uniform: [-0.1, 0.2]}", r"params\.dropout: .*dropout=-0\.1"),
        ("params:\n  max_lrr: 0.1", r"params\.max_lrr: unknown key"),
        ("params:\n  max_lr: {normal: [0, 1]}", r"unknown distribution 'normal'"),
        ("arch:\n  resnet: {}", r"arch\.resnet: unknown architecture"),
        ("arch:\n  super_light: {width1: 4}", r"arch\.super_light\.width1: unknown key"),
        ("settings: {epochs: 3, grace_period: 5}", r"settings\.grace_period"),
        ("settings: {sample: 3}", r"settings\.sample: unknown key"),
        ("settings: {promotion: lazy}", r"settings\.promotion: 'lazy'; allowed: greedy, end"),
        ("settings: {asha_metric: test_accuracy}", r"settings\.asha_metric: .*val_acc_avg3"),
        ("points_to_evaluate: [{arch: tiny, width1: 99}]", r"points_to_evaluate\[0\]"),
        ("extra: 1", r"unknown top-level key"),
    ],
)
def test_errors_name_file_and_key(tmp_path, change, message):
    doc = _replace_block(BASE.strip(), change.split(":", 1)[0])
    path = write(tmp_path, doc + "\n" + change + "\n")
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _replace_block(doc: str, top: str) -> str:
    """Drop the top-level block `top` from `doc` (the change supplies its own)."""
    out, skipping = [], False
    for line in doc.split("\n"):
        if not line.startswith(" "):
            skipping = line.startswith(f"{top}:")
        if not skipping:
            out.append(line)
    return "\n".join(out)


def test_not_yaml_is_one_line(tmp_path):
    path = write(tmp_path, "settings: [unclosed\n  - : :")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(path)


@pytest.mark.parametrize(
    "text, key, lines",
    [
        (
            "settings:\n  epochs: 3\n  samples: 2\n  epochs: 5\narch: {super_light: {}}\n",
            "epochs",
            "2 and 4",
        ),
        (
            "settings: {epochs: 3}\narch:\n  super_light: {}\n  super_light: {}\n",
            "super_light",
            "3 and 4",
        ),
        ("arch: {super_light: {}}\nsettings: {}\narch: {tiny: {}}\n", "arch", "1 and 3"),
    ],
)
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path, text, key, lines):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    message = str(caught.value)
    assert f"key {key!r} is given twice (lines {lines})" in message and "\n" not in message


def test_yaml_tags_are_refused(tmp_path):
    path = write(tmp_path, BASE + "\ndescription: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(path)


def test_resource_arithmetic_packs_trials_on_gpus():
    plan = plan_resources(4, 4, 1, cluster_cpus=64, cluster_gpus=4)
    assert plan.concurrency == 16 and plan.per_trial == {"cpu": 1, "gpu": 0.25}
    assert plan_resources(4, 4, 1, cluster_cpus=8, cluster_gpus=4).concurrency == 8
    cpu = plan_resources(0, 4, 2, cluster_cpus=16, cluster_gpus=0)
    assert cpu.concurrency == 8 and cpu.per_trial == {"cpu": 2}


def test_too_many_gpus_is_refused():
    with pytest.raises(UsageError, match="only 0 GPU"):
        plan_resources(4, 4, 1, cluster_cpus=2, cluster_gpus=0)
    with pytest.raises(UsageError, match="--gpus -1"):
        plan_resources(-1, 4, 1, cluster_cpus=2, cluster_gpus=0)


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "", "-x"])
def test_experiment_names_cannot_escape_results(name):
    with pytest.raises(UsageError):
        check_name(name)


def test_thin_deep_space_starts_from_the_public_anchor_and_its_probe_searches_the_same():
    """The 3,762-parameter public net's layout (nine 3x3 convs of 4/8/8 channels, two
    max-pools, GAP, 1x1 to 10) and recipe (plain SGD, batch 32) is the first point; the CPU
    probe differs only in its settings."""
    import torch.nn as nn

    from tune_mnist.train.models import build_from_config, count_params

    full = load_space(ROOT / "search_spaces" / "thin_deep.yaml")
    probe = load_space(ROOT / "search_spaces" / "experiments" / "thin_deep_probe.yaml")
    assert (full.shared, full.branches, full.fixed) == (probe.shared, probe.branches, probe.fixed)
    assert full.settings["pareto"] and full.settings["seeds_per_trial"] == 3
    constants = {
        f"tiny:{k}": d.values[0] for k, d in full.branches["tiny"].items() if d.kind == "const"
    }
    config = full.train_config({**full.fixed, **constants, **full.points[0]})
    model = build_from_config(config)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [4] * 3 + [8] * 6 and len(pools) == 2
    assert count_params(model) == 3692
    assert (config.optimizer, config.momentum, config.batch_size) == ("sgd", 0.0, 32)
    assert (config.brightness, config.contrast, config.photometric_p) == (0.2, 0.2, 0.5)
