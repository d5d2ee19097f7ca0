"""Scoring a checkpoint on saved episodes: the evaluation config, the one pipeline
(features, methods, scores, results), the score cache, the fold guard, the statistics
(intervals over base seeds and episodes) and per-episode views of what a method did."""
