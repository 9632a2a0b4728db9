"""An example project that uses an installed rnnlab: its own task, cell and configs."""
