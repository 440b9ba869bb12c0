"""Running a list of stages: the job (inputs, output contract, loading, device), the shared context, the stage
loop with resume, and the checkpoint. ``maskopt.run.job`` is the entry: run_job (files), run_on (a model in
memory), prune (the Python shortcut)."""
