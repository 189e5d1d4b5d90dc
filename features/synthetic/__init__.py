"""The seeded synthetic purchase log with ground truth (``synth``) and simulated
campaign outcomes with known uplift (``campaigns``).
"""
