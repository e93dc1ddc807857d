"""unlearnflow's algorithm library: pure functions and small dataclasses, tensors in, tensors out.

It never imports prefect or mlflow, so it can be used and tested on its own.
"""
