"""The console: a web UI at ``/console`` for tenants (their batches, results, callbacks, money,
keys and apps, WhatsApp numbers) and the operator (the same across tenants, plus accounts, prices
and upstreams). Server-rendered from templates; every asset ships inside the package."""
