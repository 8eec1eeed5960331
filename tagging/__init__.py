"""Tagging: the User Interest Handbook, teachers, tag normalization, the student and distillation.

May import ``features`` (schemas, run directories); nothing else.
"""
