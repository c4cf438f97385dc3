"""simnet: many nodes on one machine (real processes) and a seeded deterministic simulator.

Sits on top of everything; nothing imports simnet.
"""
