"""A Python client for numgate's NXCloud door (and NXCloud itself): it signs requests exactly as
NXCloud clients do. Sync: :class:`NxClient`; async: :class:`AsyncNxClient`."""

from numgate.client.nxcloud import AsyncNxClient, NxClient, NxError, headers_for

__all__ = ["AsyncNxClient", "NxClient", "NxError", "headers_for"]
