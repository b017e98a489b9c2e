"""The NXCloud door: signed-header JSON API (Number Check, WhatsApp integrator endpoints)."""
