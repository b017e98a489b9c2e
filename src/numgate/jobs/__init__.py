"""Claiming, leasing and retrying rows; the worker loop."""
