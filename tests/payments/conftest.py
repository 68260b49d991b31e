"""The payment fixtures (see tests/payments/support.py) for the tests of this package."""

from tests.payments.support import (  # noqa: F401
    alice,
    cryptopay,
    cryptopay_control,
    kassa,
    kassa_control,
    pay_settings,
    runtime,
    web,
)
