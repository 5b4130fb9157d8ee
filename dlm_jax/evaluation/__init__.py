"""Evaluation metrics and drivers."""
