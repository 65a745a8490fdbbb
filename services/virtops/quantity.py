"""Kubernetes resource quantities ('64Mi', '128M', '500m', '1e3'): one parser for the agent and the controller."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIX: dict[str, Decimal] = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50),
    "Ei": Decimal(2**60), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
    "E": Decimal(10**18),
}
# Kubernetes' grammar: a signed decimal number, then a binary suffix, a decimal SI suffix (lower-case k:
# 'K' is not one) or a decimal exponent.
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity in base units: '64Mi' -> 67108864, '128M' -> 128000000, '500m' -> 0.5.

    Raises ValueError naming the value when it is not a quantity.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError(f"not a quantity: {value!r}")
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _SUFFIX:  # before the exponent: 'E' (exa) and 'Ei' (exbi) start like one
        return number * _SUFFIX[suffix]
    return number * (Decimal(10) ** int(suffix[1:]))
