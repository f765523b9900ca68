"""Built-in gradient estimators, one module each (installed as gradbench.estimators)."""
