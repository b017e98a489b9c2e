"""Fake HLR and test-call vendors, written from their published contracts (docs/upstreams.md has
the adapters' side; the research notes they were written from are summarised in each docstring).

Each fake is a real aiohttp server on a loopback port (``conftest.aiohttp_server``), checks
credentials the way its vendor does, answers per number by the number's last digit, and can
misbehave the ways the vendor does: throttle (429), fail (500), hang, answer malformed JSON, leave
numbers out of a batch; the test-call fake sends signed status callbacks — or never, twice, late,
or only when the test releases them.
"""
