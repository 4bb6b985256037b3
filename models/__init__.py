"""The helmholtz model zoo (installed as ``helmholtz.models``).

Importing this package registers every model; look one up by name:

>>> from helmholtz import models
>>> entry = models.get("eight_schools_noncentered")
>>> args, kwargs = entry.args(seed=0)
"""

from . import boltzmann, classic
from ._zoo import ZooEntry, entries, get, names, register

__all__ = ["ZooEntry", "register", "get", "names", "entries", "boltzmann", "classic"]
