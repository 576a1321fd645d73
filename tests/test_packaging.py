"""The design card's layout: models/ and guides/ ship inside the package."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_editable_install_maps_models_and_guides():
    import sqair_pyro.guides.sqair
    import sqair_pyro.models.sqair

    assert Path(sqair_pyro.models.sqair.__file__).resolve() == ROOT / "models" / "sqair.py"
    assert Path(sqair_pyro.guides.sqair.__file__).resolve() == ROOT / "guides" / "sqair.py"


@pytest.mark.slow
def test_wheel_ships_models_and_guides(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("models/sqair.py", "models/air.py", "guides/sqair.py", "guides/air.py"):
        assert f"sqair_pyro/{module}" in names
    assert "sqair_pyro/infer/vimco.py" in names
    assert {
        "sqair_pyro/weights/mlp-air.pt",
        "sqair_pyro/weights/mlp-air.json",
    } <= names
