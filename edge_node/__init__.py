"""edgesync edge_node."""
