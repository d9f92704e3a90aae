"""TODO: being written (see DESIGN.md)."""

__all__: list[str] = []
