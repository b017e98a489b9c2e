"""Doors: each authenticates in its vendor's way, calls the core, renders the vendor's envelope."""
