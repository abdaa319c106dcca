"""backtest room; see DESIGN.md."""
