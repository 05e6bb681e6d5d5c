"""Checkers that judge an experiment's history (``fabric.history``): pure functions,
operations in, a ``Verdict`` out.

* ``check_blocks``: every vdisk block behaves as a register (acknowledged writes are
  never lost, reads return only values that were written);
* ``check_linearizable_kv``: the kv history is linearizable, key by key;
* ``check_availability``: windows in which clients got no answer.
"""

from fabric.checkers.availability import check_availability
from fabric.checkers.blocks import check_blocks
from fabric.checkers.kv import check_linearizable_kv
from fabric.checkers.verdict import Verdict

__all__ = ["Verdict", "check_availability", "check_blocks", "check_linearizable_kv"]
