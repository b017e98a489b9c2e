"""Every core error resolves to a specific entry in each door's table (not the catch-all)."""

from __future__ import annotations

import inspect

import pytest

from numgate import errors as e
from numgate.dialects.cams import codes as cams
from numgate.dialects.nxcloud import codes as nx

#: errors that never reach a door (raised at start-up or by the CLI)
NOT_ON_THE_WIRE = {
    e.NumgateError,
    e.ConfigurationError,
    e.SchemaOutOfDate,
    e.DatabaseMissing,
    e.Unavailable,  # its kinds (StorageUnavailable, SharedStateUnavailable) are on the wire
    e.Conflict,  # services turn it into the domain error that names what collided
    e.InvalidRequest,
    e.NotFound,
    e.PermissionDenied,
    e.Billing,
    e.LimitExceeded,
    e.Onboarding,
    # Number Check only (the WhatsApp actions are not billed)
    e.PriceNotFound,
    e.InsufficientBalance,
}
CORE_ERRORS = [
    c
    for _, c in inspect.getmembers(e, inspect.isclass)
    if issubclass(c, e.NumgateError) and c not in NOT_ON_THE_WIRE
]
ONBOARDING = [c for c in CORE_ERRORS if issubclass(c, e.Onboarding | e.PhoneNumberNotFound)]


def make(cls: type[e.NumgateError]) -> e.NumgateError:
    if cls in (e.MissingParameter, e.InvalidParameter):
        return cls("Field", "what is wrong")  # type: ignore[call-arg]
    if cls is e.ActionNotAllowed:
        return cls("cams:X")  # type: ignore[call-arg]
    return cls("what is wrong")


@pytest.mark.parametrize("cls", CORE_ERRORS, ids=lambda c: c.__name__)
def test_cams_has_a_specific_code(cls: type[e.NumgateError]) -> None:
    code = cams.code_for(make(cls))
    assert code is not cams.INTERNAL, f"{cls.__name__} falls through to InternalError"


@pytest.mark.parametrize("cls", CORE_ERRORS, ids=lambda c: c.__name__)
def test_nxcloud_integrator_has_a_specific_code(cls: type[e.NumgateError]) -> None:
    code = nx.code_for(nx.Family.INTEGRATOR, make(cls))
    assert code is not nx.INTEGRATOR_CODES[e.NumgateError], f"{cls.__name__} falls through"


@pytest.mark.parametrize("cls", ONBOARDING, ids=lambda c: c.__name__)
def test_onboarding_errors_keep_their_message(cls: type[e.NumgateError]) -> None:
    exc = make(cls)
    assert cams.code_for(exc).render(exc)[1] in (
        "what is wrong",
        "The resource does not belong to the current user.",
    )
    assert nx.code_for(nx.Family.INTEGRATOR, exc).message(exc) == "what is wrong"


def test_a_driver_outage_is_service_unavailable_without_its_words() -> None:
    """A driver's error becomes StorageUnavailable in db/errors.py; the doors answer "try again"
    with a fixed text and never pass the driver's words (host names, SQL) on."""
    from sqlalchemy.exc import OperationalError

    from numgate.db.errors import translate

    raw = OperationalError("SELECT 1", {}, ConnectionRefusedError("connect to 10.0.0.7:5432 refused"))
    exc = translate(raw)
    assert isinstance(exc, e.StorageUnavailable)
    code, message, recommend = cams.code_for(exc).render(exc)
    assert (cams.code_for(exc).status, code) == (503, "ServiceUnavailable")
    assert "10.0.0.7" not in message + recommend
    for family in nx.Family:
        c = nx.code_for(family, exc)
        assert c.code in (299, 9001) and c.message(exc) == c.text
    assert cams.code_for(RuntimeError("a bug")) is cams.INTERNAL
