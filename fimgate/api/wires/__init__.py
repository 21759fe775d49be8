"""Wires: one module per client format. A wire reads its client's request into a job for the
serving step (api/serving.py) and writes the answer back in the client's format; it knows
nothing else."""
