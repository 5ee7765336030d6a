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
