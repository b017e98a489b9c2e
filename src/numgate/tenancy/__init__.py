"""Accounts, access keys, apps (an app is also a CAMS space), permissions and rate limits."""
