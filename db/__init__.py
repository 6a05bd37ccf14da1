"""candlecast: db package."""
