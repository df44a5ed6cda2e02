"""Order lifecycle: states and transitions (pure)."""
