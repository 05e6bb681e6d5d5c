"""A container's storage policy: replication, dedup, compression, erasure coding."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from fabric.errors import BadRequest

MAX_RF = 3
MAX_ZSTD_LEVEL = 19
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ContainerPolicy:
    rf: int = 2
    dedup: bool = False
    compression: str = "none"
    """"none" or "zstd"."""
    compression_level: int = 3
    min_saving_ratio: float = 0.1
    """Store an extent compressed only if that saves at least this fraction of it."""
    ec_k: int = 0
    ec_m: int = 0
    """Erasure coding k data + m parity strips (0+0: none)."""
    ec_delay_s: float = 3600.0
    """How long an extent group stays cold before it is erasure coded."""

    @property
    def ec(self) -> str | None:
        return f"{self.ec_k}+{self.ec_m}" if self.ec_k else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerPolicy:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def check_policy(p: ContainerPolicy) -> ContainerPolicy:
    """Raise BadRequest unless every field of ``p`` is in range."""
    if not 1 <= p.rf <= MAX_RF:
        raise BadRequest(f"rf must be 1..{MAX_RF}")
    if p.compression not in ("none", "zstd"):
        raise BadRequest("compression must be 'none' or 'zstd'")
    if not 1 <= p.compression_level <= MAX_ZSTD_LEVEL:
        raise BadRequest(f"compression_level must be 1..{MAX_ZSTD_LEVEL}")
    if not 0 <= p.min_saving_ratio < 1:
        raise BadRequest("min_saving_ratio must be in [0, 1)")
    if (p.ec_k == 0) != (p.ec_m == 0) or not (0 <= p.ec_k <= 16 and 0 <= p.ec_m <= 8):
        raise BadRequest(f"ec {p.ec_k}+{p.ec_m}: k must be 1..16 and m 1..8")
    if not 0 <= p.ec_delay_s < float("inf"):
        raise BadRequest("ec_delay_s must be a non-negative number of seconds")
    return p


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(f"{kind} name must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def parse_ec(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\+(\d+)", text.strip())
    if not m:
        raise BadRequest(f"ec must look like k+m (e.g. 4+2), not {text!r}")
    k, mm = int(m.group(1)), int(m.group(2))
    if not (1 <= k <= 16 and 1 <= mm <= 8):
        raise BadRequest(f"ec {k}+{mm}: k must be 1..16 and m 1..8")
    return k, mm


def policy_from_request(body: dict[str, Any]) -> ContainerPolicy:
    """Validate a user's container request (JSON) into a policy, or raise BadRequest."""
    unknown = sorted(
        set(body)
        - {
            "name",
            "rf",
            "dedup",
            "compression",
            "compression_level",
            "min_saving_ratio",
            "ec",
            "ec_delay_s",
        }
    )
    if unknown:
        raise BadRequest(f"unknown container field {unknown[0]!r}")
    rf = body.get("rf", 2)
    if not isinstance(rf, int) or isinstance(rf, bool) or not 1 <= rf <= MAX_RF:
        raise BadRequest(f"rf must be 1..{MAX_RF}")
    dedup = body.get("dedup", False)
    if not isinstance(dedup, bool):
        raise BadRequest("dedup must be true or false")
    compression = body.get("compression", "none")
    if compression not in ("none", "zstd"):
        raise BadRequest("compression must be 'none' or 'zstd'")
    level = body.get("compression_level", 3)
    if not isinstance(level, int) or not 1 <= level <= MAX_ZSTD_LEVEL:
        raise BadRequest(f"compression_level must be 1..{MAX_ZSTD_LEVEL}")
    saving = body.get("min_saving_ratio", 0.1)
    if not isinstance(saving, int | float) or not 0 <= saving < 1:
        raise BadRequest("min_saving_ratio must be in [0, 1)")
    k, m = parse_ec(body["ec"]) if body.get("ec") else (0, 0)
    delay = body.get("ec_delay_s", 3600.0)
    if not isinstance(delay, int | float) or delay < 0:
        raise BadRequest("ec_delay_s must be a non-negative number of seconds")
    return ContainerPolicy(rf, dedup, compression, level, float(saving), k, m, float(delay))
