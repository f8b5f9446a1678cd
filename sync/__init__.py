"""edgesync's CRDT core: delta-state CRDTs over a shared causal context.

Pure: the standard library only; clocks and randomness are parameters. Every
mutator changes a replica in place and returns a delta of the same type, and
``merge`` is the one join::

    from sync import AWSet
    a, b = AWSet(), AWSet()
    delta = a.add("node-a", "pump-7")   # a changes, delta describes the change
    b.merge(delta)                      # ship delta anywhere, any number of times
    assert a == b

``BUILD`` says which form of the core was imported: ``"compiled"`` (mypyc
extension modules, the default install) or ``"pure"`` (see ``sync._build``).
"""

from sync._awset import AWSet
from sync._build import BUILD
from sync._causal import Dot, DotContext, VersionVector
from sync._codec import DEFAULT_MAX_SIZE, FORMAT_VERSION
from sync._counter import Counter
from sync._crdt import CRDT, crdt_types, decode, digest, encode
from sync._errors import ClockSkewError, CodecError
from sync._ewflag import EWFlag
from sync._extremum import MaxRegister, MinRegister
from sync._gcounter import GCounter
from sync._hlc import HybridLogicalClock, Timestamp
from sync._kernel import DotKernel
from sync._keyspace import Keyspace
from sync._lwwregister import LWWRegister
from sync._mvregister import MVRegister
from sync._ormap import ORMap
from sync._pncounter import PNCounter

__all__ = [
    "BUILD",
    "CRDT",
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "AWSet",
    "ClockSkewError",
    "CodecError",
    "Counter",
    "Dot",
    "DotContext",
    "DotKernel",
    "EWFlag",
    "GCounter",
    "HybridLogicalClock",
    "Keyspace",
    "LWWRegister",
    "MVRegister",
    "MaxRegister",
    "MinRegister",
    "ORMap",
    "PNCounter",
    "Timestamp",
    "VersionVector",
    "crdt_types",
    "decode",
    "digest",
    "encode",
]
