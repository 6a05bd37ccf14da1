"""candlecast: forecasting package."""
