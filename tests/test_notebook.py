"""examples/quickstart.ipynb runs top to bottom (nbclient), is stored without outputs, and is the
notebook form of examples/quickstart.py (jupytext percent format, the file to edit)."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the [test] extra")


def test_notebook_is_stored_without_outputs_and_matches_its_py():
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    jupytext = pytest.importorskip("jupytext")
    py = jupytext.read(EXAMPLES / "quickstart.py")
    assert [c.source for c in py.cells] == [c.source for c in nb.cells], \
        "regenerate: jupytext --to ipynb examples/quickstart.py -o examples/quickstart.ipynb (then strip outputs)"


@pytest.mark.slow
def test_notebook_executes(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")
    assert "bound eq67_lower_sharp, delta=0.2, t=auto" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
