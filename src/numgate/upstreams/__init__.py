"""Upstreams: the operator's accounts at HLR and test-call vendors, the routes that pick them per
level and country, their health, the live-result cache, and one adapter module per vendor."""
