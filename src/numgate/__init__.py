"""numgate: a self-hostable phone-number verification gateway.

It speaks NXCloud's signed-header JSON API and Alibaba Cloud CAMS's RPC API in front of
one core (tenants, prices and balances, number checks, WhatsApp onboarding, callbacks).
"""

__version__ = "0.1.0"
