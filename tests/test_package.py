"""The package around the extension: what an unbuilt checkout says, and
the version the metadata and the module agree on."""
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest

import cfutures


@pytest.mark.timeout(60)
def test_ext_unbuilt_checkout_says_how_to_build(tmp_path):
    # A checkout before any build: the Python files without the compiled
    # module.  Python's own message blamed "a partially initialized module
    # (most likely due to a circular import)".
    src = os.path.dirname(cfutures.__file__)
    shutil.copytree(src, tmp_path / "cfutures",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd",
                                                  "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import cfutures"],
                          cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=50)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), proc.stderr
    assert "circular import" not in proc.stderr
    assert "not built" in last and "pip install ." in last
    assert str(tmp_path / "cfutures") in last


def test_ext_version_is_the_metadata_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc|\.dev|\.post)?\d*",
                        cfutures.__version__)
    try:
        installed = importlib.metadata.version("cfutures")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("cfutures is not installed (only built in place)")
    assert installed == cfutures.__version__
