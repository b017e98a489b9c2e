"""Number Check: offline classification, HLR / call providers, batches and their workers."""
