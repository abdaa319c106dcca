"""bench room; see DESIGN.md."""
