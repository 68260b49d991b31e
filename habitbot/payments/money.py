"""Minor units (our integers) to providers' decimal strings and back, exactly."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Digits after the point per currency; Telegram Stars (XTR) are whole.
EXPONENTS = {"XTR": 0}
DEFAULT_EXPONENT = 2


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency, DEFAULT_EXPONENT)


def to_text(amount_minor: int, currency: str) -> str:
    """19900 RUB → "199.00" (always the currency's number of decimals)."""
    digits = exponent(currency)
    value = Decimal(amount_minor).scaleb(-digits)
    return f"{value:.{digits}f}"


def to_minor(value: object, currency: str) -> int:
    """"199.00", "199", 199.0 → 19900 for RUB; ValueError when not an exact amount."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"not an amount: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    minor = amount.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"more decimals than {currency} has: {value!r}")
    return int(minor)
