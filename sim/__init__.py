"""edgesync sim."""
