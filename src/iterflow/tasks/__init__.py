"""Built-in tasks: control flow and small helpers the graph builder uses."""
