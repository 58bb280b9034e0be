"""The payload's entry points: ``plan_payload`` (save), ``decode_payload`` (load), ``MapLocation``.

A checkpoint becomes a safetensors payload whose non-tensor structure travels as tagged JSON
(docs/FORMAT.md §9); no pickle anywhere. This package is the only place that creates tensors.
"""

from .decode import decode_payload
from .devices import MapLocation
from .encode import plan_payload

__all__ = ["MapLocation", "decode_payload", "plan_payload"]
