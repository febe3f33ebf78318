"""Start-up stays light: loading recipes and the registry does not import OpenCV or SimpleITK."""

import subprocess
import sys

CHECK = """
import sys
from medflow.recipe.model import recipe_model
import medflow.cli, medflow.engine.build, medflow.recipe.loader
recipe_model()
loaded = [m for m in ("cv2", "SimpleITK", "torch", "dask")
          if m in sys.modules and type(sys.modules[m]).__name__ != "_LazyModule"]
print(",".join(loaded))
"""


def test_registry_and_cli_do_not_import_heavy_libraries():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
