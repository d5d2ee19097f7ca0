"""Jobs over whole notebooks and grids: the main job (papermill), the docs published from
its outputs, and sweeps (planned, run on submitit, gathered into one table)."""
