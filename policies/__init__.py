"""Access policies (YAML): roles, departments, readable fields, approval levels."""
