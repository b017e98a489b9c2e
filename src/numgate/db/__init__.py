"""Storage: engine, tables and migrations. Driver errors are translated here and nowhere else."""
