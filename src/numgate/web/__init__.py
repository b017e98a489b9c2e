"""numgate's own pages (not a vendor dialect)."""
