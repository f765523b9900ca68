"""Built-in tasks, one module each (installed as gradbench.tasks)."""
