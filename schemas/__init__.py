"""Event schemas: JSON Schema files under ``schemas/json`` and their compiled validators."""
