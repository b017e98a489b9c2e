"""The core's errors. Doors translate them to vendor codes, each through one table.

Hierarchy::

    NumgateError
    ├── ConfigurationError          bad setting, missing/mismatched master key
    ├── SchemaOutOfDate             database not migrated to the code's head
    ├── DatabaseMissing             no database where the settings point (read-only commands)
    ├── Unavailable                 a dependency is down: worth retrying later
    │   ├── StorageUnavailable      the database cannot be reached, or stayed locked
    │   └── SharedStateUnavailable  Redis (replay memory, rate limits) cannot be reached
    ├── Conflict                    a write broke a uniqueness rule (the caller says which)
    ├── InvalidRequest              the caller sent something unusable
    │   ├── MissingParameter        a required field is absent or empty
    │   ├── InvalidParameter        a field has the wrong type or value
    │   ├── TooManyNumbers          more numbers than one submit allows
    │   ├── MixedCountries          a batch spans several calling regions
    │   ├── UnknownCountry          no number of the batch has a recognisable country
    │   ├── InvalidCheckLevel       checkLevel not in 1, 4, 5
    │   ├── BatchNoTooLong          batchNo longer than 64 characters
    │   └── PhoneNumberTaken        the number is already attached to an app
    ├── NotFound
    │   ├── AppNotFound             no app with that appkey / CustSpaceId
    │   └── PhoneNumberNotFound     the number is on none of the caller's apps
    ├── PermissionDenied
    │   ├── AppNotOwned             the app belongs to another account
    │   ├── BusinessNotEnabled      the account lacks this business
    │   ├── NotIntegrator           integrator endpoint called by a direct customer
    │   └── ActionNotAllowed        the access key's policy does not allow the action
    ├── Billing
    │   ├── PriceNotFound           no price for this level and country
    │   └── InsufficientBalance     the reservation does not fit the balance
    ├── LimitExceeded
    │   ├── RateLimited             more calls per second than allowed
    │   └── AppLimitReached         too many apps for one account
    ├── Onboarding                  WhatsApp number lifecycle rules
    │   ├── CodeRequestTooFrequent  cooldown or request cap not respected
    │   ├── CodeMismatch            wrong verification code
    │   ├── CodeExpired             code past its lifetime, or none requested
    │   ├── CodeAttemptsExhausted   too many wrong codes for one request
    │   ├── NotVerified             registration needs a verified number
    │   ├── AlreadyRegistered
    │   ├── NotRegistered
    │   └── RegisterLimitExceeded   10 (de)registrations per 72 h moving window
    └── UpstreamError               an upstream (HLR, call, Meta) failed
"""

from __future__ import annotations


class NumgateError(Exception):
    """Base of every error numgate raises on purpose. ``str(exc)`` is a message for a person."""


class ConfigurationError(NumgateError):
    pass


class SchemaOutOfDate(NumgateError):
    pass


class DatabaseMissing(ConfigurationError):
    """The settings point at a database that does not exist (a read-only command never makes one)."""


class Unavailable(NumgateError):
    """A dependency is down, unreachable or too slow: worth retrying later. ``dependency`` names
    it for ``/healthz`` and the logs; ``str(exc)`` is for the operator, never for clients (it can
    carry a driver's text)."""

    dependency = "dependency"


class StorageUnavailable(Unavailable):
    """Worth retrying: the database is down, unreachable, or locked past its timeout."""

    dependency = "database"


class SharedStateUnavailable(Unavailable):
    """Redis (``NUMGATE_REDIS_URL``: replay memory and rate limits) cannot be reached."""

    dependency = "redis"


class Conflict(NumgateError):
    """A write hit a unique or foreign-key constraint (raised by ``db.direct`` only; services
    turn it into the domain error that says what collided)."""


class InvalidRequest(NumgateError):
    pass


class MissingParameter(InvalidRequest):
    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or f"{name} is required")


class InvalidParameter(InvalidRequest):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


class TooManyNumbers(InvalidRequest):
    pass


class MixedCountries(InvalidRequest):
    pass


class UnknownCountry(InvalidRequest):
    pass


class InvalidCheckLevel(InvalidRequest):
    pass


class BatchNoTooLong(InvalidRequest):
    pass


class PhoneNumberTaken(InvalidRequest):
    pass


class NotFound(NumgateError):
    pass


class AppNotFound(NotFound):
    pass


class PhoneNumberNotFound(NotFound):
    pass


class PermissionDenied(NumgateError):
    pass


class AppNotOwned(PermissionDenied):
    pass


class BusinessNotEnabled(PermissionDenied):
    pass


class NotIntegrator(PermissionDenied):
    pass


class ActionNotAllowed(PermissionDenied):
    def __init__(self, operation: str, message: str | None = None) -> None:
        self.operation = operation
        super().__init__(message or f"this access key is not allowed to call {operation}")


class Billing(NumgateError):
    pass


class PriceNotFound(Billing):
    pass


class InsufficientBalance(Billing):
    pass


class LimitExceeded(NumgateError):
    pass


class RateLimited(LimitExceeded):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class AppLimitReached(LimitExceeded):
    pass


class Onboarding(NumgateError):
    pass


class CodeRequestTooFrequent(Onboarding):
    pass


class CodeMismatch(Onboarding):
    pass


class CodeExpired(Onboarding):
    pass


class CodeAttemptsExhausted(Onboarding):
    pass


class NotVerified(Onboarding):
    pass


class AlreadyRegistered(Onboarding):
    pass


class NotRegistered(Onboarding):
    pass


class RegisterLimitExceeded(Onboarding):
    pass


class UpstreamError(NumgateError):
    pass


class NoRoute(NumgateError):
    """A live level (HLR, Call) was asked for a country no upstream serves: refused at submit,
    nothing reserved (NXCloud 206)."""


class UpstreamNotFound(NotFound):
    pass
