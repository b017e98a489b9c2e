"""WhatsApp Business number onboarding: the lifecycle rules and the upstreams behind them."""
