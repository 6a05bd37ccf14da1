"""candlecast: web package."""
