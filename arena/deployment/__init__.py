"""The running arena: its processes, health, operations page and demo."""
