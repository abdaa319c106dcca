"""trading room; see DESIGN.md."""
