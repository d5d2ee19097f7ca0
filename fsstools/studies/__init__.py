"""What the notebooks call: their parameters and profiles, the recipes of each study, the
meta-learning study, readings written from the numbers, reports, widgets, and notebook
07's tasks and upload boxes."""
