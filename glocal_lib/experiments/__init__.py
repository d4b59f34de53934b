"""Experiments: the registry of every table and figure, and what draws them from saved runs.

`open_notebook` (the parameters checked, then `open_reproduction`) is what the notebooks call; `glocal reproduce` (reproduce.py) runs the notebooks.
"""

from glocal_lib.experiments.pipeline import Reproduction, open_notebook, open_reproduction
from glocal_lib.experiments.registry import Registry, load_registry

__all__ = ["Registry", "Reproduction", "load_registry", "open_notebook", "open_reproduction"]
