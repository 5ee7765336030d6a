"""The one door to Ray's internals (tune_mnist/search/ray_door.py): the only module that uses
a private Ray API, checked against the Ray version it names."""

import re

import ray
from searchutil import ROOT

from tune_mnist.search import ray_door


def test_the_door_was_checked_against_the_installed_ray():
    """A new Ray: read each "Upgrade:" note in ray_door.py and run the test it names, then
    update RAY_CHECKED."""
    assert ray.__version__ == ray_door.RAY_CHECKED, (ray.__version__, ray_door.RAY_CHECKED)


def test_no_other_module_reaches_into_ray():
    private = re.compile(r"^\s*(from|import)\s+ray\S*\.(_\w+|\w*_internal)", re.MULTILINE)
    users = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "tune_mnist").rglob("*.py"))
        if private.search(path.read_text())
    ]
    assert users == ["tune_mnist/search/ray_door.py"]


def test_every_upgrade_note_names_a_test_that_exists():
    text = (ROOT / "tune_mnist" / "search" / "ray_door.py").read_text()
    named = re.findall(r"(test_\w+\.py)::(test_\w+)", text)
    assert len(named) >= 5
    for module, test in named:
        assert f"def {test}(" in (ROOT / "tests" / module).read_text(), (module, test)


# what only the door may touch: Ray internals reached by attribute, logger name or
# environment variable (RAY_ADDRESS and RAY_TMPDIR are Ray's documented variables)
OUTSIDE_PUBLIC_API = {
    "a trial's storage": re.compile(r"\btrial\w*\.storage\b|\.storage\.trial_dir_name"),
    "a Ray logger by its module path": re.compile(r"getLogger\(\s*[\"']ray\."),
    "a Ray environment variable": re.compile(r"[\"']RAY_(?!ADDRESS\b|TMPDIR\b)\w+"),
    "TuneController.stop_trial": re.compile(r"\.stop_trial\("),
}


def reaches_past_the_door(text: str) -> list[str]:
    return [what for what, pattern in OUTSIDE_PUBLIC_API.items() if pattern.search(text)]


def test_no_other_module_uses_ray_beyond_its_public_api():
    found = {
        path.relative_to(ROOT).as_posix(): reaches_past_the_door(path.read_text())
        for path in sorted((ROOT / "tune_mnist").rglob("*.py"))
        if path.name != "ray_door.py"
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_the_guard_finds_a_planted_use_outside_the_door():
    planted = {
        "checkpoint = f'{trial.storage.trial_dir_name}/x'": "a trial's storage",
        "logging.getLogger('ray.tune.tune').setLevel(50)": "a Ray logger by its module path",
        'os.environ["RAY_worker_niceness"] = "0"': "a Ray environment variable",
        "tune_controller.stop_trial(trial)": "TuneController.stop_trial",
    }
    for line, what in planted.items():
        assert reaches_past_the_door(line) == [what], line
    assert reaches_past_the_door('os.environ.get("RAY_ADDRESS")') == []


def test_the_install_pins_the_ray_the_door_was_checked_against():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[tune]=={ray_door.RAY_CHECKED}"' in text


def test_joining_a_cluster_without_authentication_inits_ray_once(monkeypatch):
    """A second ray.init after ray.shutdown in one process can crash it later (SIGSEGV,
    ray-project/ray#31145): the token probe runs in a child, and the driver joins once,
    with the authentication the probe found."""
    calls = []
    monkeypatch.setattr(ray_door, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray_door, "use_auth_token", lambda: True)
    answers = iter([False, True])  # with the token, then without
    monkeypatch.setattr(ray_door, "_actor_runs_in_child", lambda address: next(answers))
    monkeypatch.setattr(ray_door, "_set_auth_mode", lambda mode: calls.append(("mode", mode)))
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", kw["address"])))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown",)))
    ray_door.join("127.0.0.1:1")
    assert calls == [("mode", "disabled"), ("init", "127.0.0.1:1")]


def test_a_chain_inits_ray_once_through_its_stages(monkeypatch):
    """Inside one_ray a stage's stop_ray leaves Ray up and the next stage's
    start_ray joins it; the block's end shuts it down once."""
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append("init"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray, "is_initialized", lambda: "init" in calls)
    with ray_door.one_ray():
        for _ in ("search", "race", "confirmation"):
            ray_door.start_ray(None, cpus=1, gpus=0)
            ray_door.stop_ray()
    assert calls == ["init", "shutdown"]
    calls.clear()
    ray_door.start_ray(None, cpus=1, gpus=0)  # outside a chain, each command its own
    ray_door.stop_ray()
    assert calls == ["init", "shutdown"]


WAITER = """
import sys, time, ray
from tune_mnist.search import ray_door
ray_door.start_ray(None, cpus=1, gpus=0)
task = ray.remote(lambda: time.sleep(120)).remote()
print("waiting", flush=True)
started = time.monotonic()
try:
    ray_door.wait_one([task])
except KeyboardInterrupt:
    print(f"stopped after {time.monotonic() - started:.0f} s", flush=True)
"""


def test_a_ctrl_c_while_waiting_on_ray_tasks_stops_the_wait(tmp_path):
    """Ray's blocking wait drops a SIGINT that lands inside it (the caller waited the task
    out): the race and the confirmation wait through ray_door.wait_one."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "out.txt"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", WAITER], stdout=out, cwd=ROOT)
        try:
            deadline = time.monotonic() + 120
            while "waiting" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)  # into the wait itself (a SIGINT before it stops it all the same)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)  # the task sleeps 120 s: a lost signal times out here
        finally:
            proc.kill()
    assert "stopped after" in log.read_text(), log.read_text()
